"""Read any JUnit file, once, into flat, comparable cases and the suites' properties.

Accepts the harness's own files (per-case ``<properties>`` with ``failure_class``), plain
``pytest --junitxml`` output (a ``<testsuites>`` root or a bare ``<testsuite>``) and what other
runners write (nested suites, properties with text values). Every problem with the file becomes
one ``InputError`` line naming it; no traceback escapes.
"""

from __future__ import annotations

import contextlib
import gc
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from xml.etree import ElementTree
from xml.etree.ElementTree import Element

from junitparser import JUnitXml
from junitparser.junitparser import JUnitXmlError

from harness import boundedread
from harness.errors import InputError
from harness.model import FailureClass, Outcome
from harness import xmlsafe

_CLASSES = {c.value: c for c in FailureClass}


@dataclass(frozen=True, slots=True)
class Case:
    """One ``<testcase>``: what happened to it and, when it failed, why."""

    suite: str
    classname: str
    name: str
    outcome: Outcome
    failure_class: FailureClass = FailureClass.NONE
    message: str = ""
    time: float = 0.0
    properties: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    text: str = field(default="", compare=False)  # the failure's body (a traceback), for reports
    log: str = field(default="", compare=False)  # <system-err>: the step's log tail, for reports

    @property
    def key(self) -> tuple[str, str]:
        return (self.classname, self.name)

    @property
    def failed(self) -> bool:
        return self.outcome is Outcome.FAILED

    @property
    def engines_built(self) -> int | None:
        """Engines the case built (the harness's ``engines_built`` property); None when the file
        does not say (another runner's JUnit, or one written before the harness counted them)."""
        try:
            return int(self.properties["engines_built"])
        except (KeyError, ValueError):
            return None

    @property
    def vram_failure(self) -> bool:
        return self.outcome is Outcome.FAILED and self.failure_class is FailureClass.VRAM_CONSTRUCTION


@dataclass(frozen=True)
class JUnitFile:
    """Everything the reports use from one JUnit file."""

    cases: list[Case]
    properties: dict[str, str]  # suite properties (device, vLLM version...): the first value of each name


def read_cases(path: str | os.PathLike) -> list[Case]:
    """Every test case of ``path`` in file order; repeated keys become ``name#2``, ``name#3``..."""
    return read(path).cases


def read(path: str | os.PathLike) -> JUnitFile:
    """The cases of ``path`` (as `read_cases`) and its suite properties, from one parse."""
    with _gc_paused():
        xml = load(Path(path))
        properties: dict[str, str] = {}
        for elem in xml._elem:  # properties of a <testsuites> root, which some runners write
            if elem.tag == "properties":
                properties.update((k, v) for k, v in _properties(elem).items() if k and k not in properties)
        try:
            pairs = [pair for suite in xml for pair in _walk(suite._elem, _text(suite.name), properties)]
        except RecursionError:
            raise InputError(f"{path}: not usable as JUnit XML: test suites nested too deeply") from None
        cases: list[Case] = []
        seen: dict[tuple[str, str], int] = {}
        for suite_name, tc in pairs:
            case = _case(suite_name, tc)
            n = seen.get(case.key, 0) + 1
            seen[case.key] = n
            if n > 1:  # pytest writes a second <testcase> when a test fails and its teardown errors
                case = replace(case, name=f"{case.name}#{n}")
            cases.append(case)
    return JUnitFile(cases, properties)


@contextlib.contextmanager
def _gc_paused():
    """Parsing builds hundreds of thousands of small acyclic objects, which triggers full collections
    that rescan the growing tree again and again (a third of the time on 10 000 cases)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


MAX_BYTES = 1 << 30  # a JUnit file of a million cases is some 500 MB


def load(path: Path) -> JUnitXml:
    """The parsed file; every problem with it one InputError line naming it."""
    data = boundedread.read(path, MAX_BYTES, lambda msg: InputError(f"{path}: {msg}"), "a JUnit file")
    if not data.strip():
        raise InputError(f"{path}: empty file, not JUnit XML")
    try:
        root = ElementTree.fromstring(data)
        return JUnitXml.fromroot(root)
    except ElementTree.ParseError as e:
        raise InputError(f"{path}: not XML: {xmlsafe.one_line(str(e))}") from None
    except JUnitXmlError:
        raise InputError(f"{path}: not JUnit XML: root element is <{xmlsafe.one_line(xmlsafe.decode(root.tag))}>, "
                         "expected <testsuites> or <testsuite>") from None
    except (ValueError, RecursionError, MemoryError) as e:  # e.g. an entity-expansion guard tripping in expat
        raise InputError(f"{path}: not usable as JUnit XML: {xmlsafe.one_line(str(e))}") from None


# Cases are read from the parsed elements directly: junitparser's per-element wrappers (a new
# TestCase, Property... object per child) cost three times the parse itself on 10 000-case files.
_FAILED_TAGS = ("failure", "error")  # <error> (setup/teardown, a crash) counts as failed


def _walk(suite: Element, name: str, properties: dict[str, str]):
    """(innermost suite name, case element) pairs in file order: some runners nest suites per file.
    Suite properties go into ``properties``, the first value of a name winning."""
    for elem in suite:
        if elem.tag == "testcase":
            yield name, elem
        elif elem.tag == "testsuite":
            yield from _walk(elem, _text(elem.get("name")), properties)
        elif elem.tag == "properties":
            for k, v in _properties(elem).items():
                if k:
                    properties.setdefault(k, v)


def _case(suite_name: str, elem: Element) -> Case:
    outcome, result, props, system_err = Outcome.PASSED, None, {}, ""
    for child in elem:  # direct children only: xunit2's <flakyFailure> inside a rerun is not a result
        tag = child.tag
        if tag in _FAILED_TAGS:
            if outcome is not Outcome.FAILED:
                outcome, result = Outcome.FAILED, child
        elif tag == "skipped":
            if outcome is Outcome.PASSED:
                outcome, result = Outcome.SKIPPED, child
        elif tag == "properties":
            props = _properties(child)
        elif tag == "system-err":
            system_err = _text(child.text)
    message = _text(result.get("message")) if result is not None else ""
    text = _text(result.text) if result is not None else ""
    failure_class = FailureClass.NONE
    if outcome is Outcome.FAILED:
        failure_class = _failure_class(props, result.get("type") or "", "\n".join((message, text, system_err)))
    return Case(suite=suite_name, classname=_text(elem.get("classname")), name=_text(elem.get("name")),
                outcome=outcome, failure_class=failure_class, message=message, time=_time(elem.get("time")),
                properties=props, text=text, log=system_err)


def _failure_class(props: dict[str, str], type_: str, text: str) -> FailureClass:
    given = _CLASSES.get(props.get("failure_class", "")) or _CLASSES.get(type_)  # the harness writes both
    if given is not None and given is not FailureClass.NONE:
        return given
    from harness.results import classify  # lazily: only failed cases of foreign files need it

    found = classify.classify_text(text)
    # A failed case always has a class: a foreign <failure> nothing explains is a failed check.
    return FailureClass.ASSERTION if found is FailureClass.NONE else found


def _properties(elem: Element) -> dict[str, str]:
    # Some runners put the value in the element's text instead of a value attribute.
    return {_text(p.get("name")): _text(p.get("value", p.text)) for p in elem if p.tag == "property"}


def _text(value: str | None) -> str:
    """An attribute or text as the harness wrote it (xmlsafe.py escapes what XML cannot hold)."""
    return xmlsafe.decode(value) if value else ""


def _time(value: str | None) -> float:
    try:
        return float(value.replace(",", "")) if value else 0.0  # "1,204.5", as junitparser accepts
    except ValueError:  # a runner wrote something like time="n/a"
        return 0.0
