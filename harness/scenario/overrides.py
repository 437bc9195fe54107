"""`--set PATH=VALUE`: one scenario value overridden for one run, applied to the raw YAML before
validation, so a value set on the command line is checked exactly like one in the file.

- PATH is dotted keys (`defaults.gpu_memory_utilization`, `variants.with_fix.profile`); a number
  indexes a list (`steps.0.timeout_s`).
- VALUE is read with YAML's safe loader: `2` is a number, `"{profile: settle}"` a mapping, `"'2'"`
  a string.
- A path that starts with `inject.` is scenario-wide: it is set under every variant's `inject`
  (a variant's own `variants.NAME.inject...` is the narrow form). Scenario-wide settings apply after
  the others, so they reach a variant that another `--set` added.
- A missing mapping on the way is created (`inject.device_model` of a variant that has none), unless
  an existing key is a near spelling of it: `variants.with_fx.profile` is refused, naming
  `with_fix`, instead of adding a variant. The last key is the schema's to judge, as in the file.

Every error that validation finds under a path the command line set says so (`blamed`).
"""

from __future__ import annotations

import argparse
import copy
import difflib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import yaml

from harness.errors import InputError, ScenarioError, ScenarioErrors

SCENARIO_WIDE = "inject"  # a top-level `inject.` path means: under every variant
_UNSET = object()


@dataclass(frozen=True)
class Setting:
    path: tuple[str, ...]
    value: Any
    text: str  # as given, for messages and run.json

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Applied:
    """One value the command line set: where (a concrete key path), what it was, what it became."""

    key: str
    before: str
    after: str
    setting: str


def add_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", action="append", metavar="PATH=VALUE",
                        help="override one scenario value for this run (repeatable; VALUE is YAML): "
                             "defaults.gpu_memory_utilization=0.5, variants.with_fix.profile=settle, "
                             "inject.device_model.release_delay_s=2 (every variant)")


def parse(text: str) -> Setting:
    """`PATH=VALUE` -> Setting; a malformed one is an InputError (exit 2) naming --set."""
    path, sep, value = text.partition("=")
    keys = tuple(path.strip().split("."))
    if not sep or not all(k.strip() for k in keys):
        raise InputError(f"--set {text!r}: expected PATH=VALUE with a dotted PATH (e.g. defaults.seed=1)")
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError as e:
        raise InputError(f"--set {text!r}: VALUE is not YAML: {' '.join(str(e).split())}") from None
    return Setting(tuple(k.strip() for k in keys), parsed, text)


def parse_all(texts: Sequence[str] | None) -> tuple[Setting, ...]:
    return tuple(parse(t) for t in texts or ())


def apply(path: Path, raw: Any, settings: Sequence[Setting]) -> tuple[Any, tuple[Applied, ...]]:
    """A copy of the raw scenario with every setting applied, and what each one changed."""
    if not settings:
        return raw, ()
    raw = copy.deepcopy(raw)
    if not isinstance(raw, dict):
        return raw, ()  # validation says what is wrong with the file itself
    applied: list[Applied] = []
    ordered = sorted(settings, key=lambda s: s.path[0] == SCENARIO_WIDE)  # stable: narrow ones first
    for s in ordered:
        for keys in _targets(path, raw, s):
            applied.append(_set(path, raw, keys, s))
    return raw, tuple(applied)


def _targets(path: Path, raw: dict, s: Setting) -> list[tuple[str, ...]]:
    if s.path[0] != SCENARIO_WIDE:
        return [s.path]
    variants = raw.get("variants")
    if not isinstance(variants, dict) or not variants:
        raise ScenarioError(path, "variants", f"--set {s.text}: a scenario-wide inject needs variants to set it on")
    return [("variants", str(name), *s.path) for name in variants]


def _set(path: Path, raw: dict, keys: tuple[str, ...], s: Setting) -> Applied:
    node: Any = raw
    for depth, key in enumerate(keys[:-1]):
        where = ".".join(keys[: depth + 1])
        child = _child(node, key, where, s, path)
        if child is _UNSET:
            near = _near(key, node)
            if near:
                raise ScenarioError(path, where, f"no such key (from --set {s.text}); did you mean '{near}'?")
            child = node[key] = {}
        if not isinstance(child, (dict, list)):
            raise ScenarioError(path, where, f"is {child!r}, not a mapping: --set {s.text} cannot set a key under it")
        node = child
    last = keys[-1]
    before = _child(node, last, ".".join(keys), s, path)
    if isinstance(node, list):
        node[int(last)] = s.value
    else:
        node[last] = s.value
    return Applied(".".join(keys), "unset" if before is _UNSET else _show(before), _show(s.value), s.text)


def _child(node: Any, key: str, where: str, s: Setting, path: Path) -> Any:
    if isinstance(node, list):
        if not key.lstrip("-").isdigit() or not -len(node) <= int(key) < len(node):
            raise ScenarioError(path, where, f"--set {s.text}: {key!r} is not an index of this list "
                                             f"(0..{len(node) - 1})")
        return node[int(key)]
    return node.get(key, _UNSET)


def _near(key: str, node: Any) -> str | None:
    names = [str(k) for k in node] if isinstance(node, dict) else []
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.75)
    return close[0] if close else None


def _show(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()


@contextmanager
def blamed(path: Path, settings: Sequence[Setting]) -> Iterator[None]:
    """A validation error under a key the command line set says it came from --set."""
    try:
        yield
    except ScenarioErrors as e:  # every mistake of the file, found in one pass
        raise ScenarioErrors([_blame(x, settings) for x in e.errors]) from None
    except ScenarioError as e:
        raise _blame(e, settings) from None


def _blame(e: ScenarioError, settings: Sequence[Setting]) -> ScenarioError:
    culprit = _culprit(e.key, settings)
    if culprit is None or "--set" in str(e):
        return e
    message = str(e)[len(f"{e.path}: {e.key}: "):]
    return ScenarioError(e.path, e.key, f"{message} (from --set {culprit.text})")


def _culprit(key: str | None, settings: Sequence[Setting]) -> Setting | None:
    if not key:
        return None
    key = key.replace("[", ".").replace("]", "")  # steps[0].engine -> steps.0.engine
    parts = key.split(".")
    in_variant = ".".join(parts[2:]) if parts[0] == "variants" else None  # variants.NAME.<this>
    for s in settings:
        dotted = ".".join(s.path)
        for k in (key, in_variant) if s.path[0] == SCENARIO_WIDE else (key,):
            if k and (_under(k, dotted) or _under(dotted, k)):
                return s
    return None


def _under(key: str, prefix: str) -> bool:
    return key == prefix or key.startswith(prefix + ".") or key.startswith(prefix + "[")
