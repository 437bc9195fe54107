"""The pytest plugin of a pytest-suite worker: one step event pair per test, the variant's profile
inside upstream's runners, upstream's own cleanup off, collection errors reported.

Hooks used, in the order pytest calls them:

- ``pytest_load_initial_conftests`` (wrapper): a ``tests/conftest.py`` that cannot be imported
  (a test dependency missing, or tests written for another vLLM) becomes a ``collect_error`` event;
- ``pytest_plugin_registered``: once pytest has imported a conftest that defines ``VllmRunner`` /
  ``HfRunner``, their ``__exit__`` is replaced on the class, or under ``native`` wrapped (`patches`);
- ``pytest_collectreport``: a test file that cannot be collected -> ``collect_error``;
- ``pytest_collection_modifyitems``: every test gets upstream's ``skip_global_cleanup`` marker
  (its autouse ``cleanup_fixture`` then does nothing; not under ``native``), hub names in its
  parameters are seeded;
- ``pytest_collection_finish``: the ``collected`` event, one entry per test with the ``classname``
  and ``name`` that ``pytest --junitxml`` writes (pytest's own ``mangle_test_address``);
- ``pytest_runtest_protocol`` (wrapper), ``pytest_runtest_makereport``, ``pytest_runtest_logreport``:
  ``step_start``/``step_end`` per test, with where a failure came from;
- ``pytest_unconfigure``: every replacement undone.
"""

from __future__ import annotations

import re
import sys
import types
from typing import Any

import pytest

from harness import events as vocab
from harness.device import vllm_engine_process
from harness.model import Outcome
from harness.worker.stream import log_offset
from harness.upstream.builds import Recorder
from harness.upstream.hfhome import looks_like_hub_id
from harness.upstream.patches import RUNNERS, Patches

_MISSING = re.compile(r"No module named '([^']+)'|cannot import name '([^']+)' from '([^']+)'")


def junit_names(nodeid: str, prefix: str | None = None) -> tuple[str, str]:
    """(classname, name) of a test, computed as ``pytest --junitxml`` computes them."""
    from _pytest.junitxml import bin_xml_escape, mangle_test_address

    names = mangle_test_address(nodeid)
    classnames = names[:-1]
    if prefix:
        classnames.insert(0, prefix)
    return ".".join(classnames), str(bin_xml_escape(names[-1]))


def missing_module(text: str) -> str | None:
    """The module a collection error says is missing (``vllm.x`` for a name ``vllm.x`` lacks)."""
    found = None
    for m in _MISSING.finditer(text):
        found = m.group(1) or f"{m.group(3)}.{m.group(2)}"
    return found


class UpstreamPlugin:
    def __init__(self, recorder: Recorder, patches: Patches):
        self.rec, self.patches = recorder, patches
        self.events = recorder.events
        self.timeout_s = float(recorder.spec.get("timeout_s", 900))
        self._index: dict[str, dict] = {}
        self._result: dict[str, Any] = {}
        self._patched: set[int] = set()

    # ------------------------------------------------------------------ collection
    @pytest.hookimpl(hookwrapper=True)
    def pytest_load_initial_conftests(self, early_config, parser, args):
        outcome = yield
        if outcome.excinfo is not None:
            exc = outcome.excinfo[1]
            cause = getattr(exc, "cause", exc)
            self._collect_error(str(getattr(exc, "path", "conftest.py")), f"{type(cause).__name__}: {cause}",
                                getattr(cause, "name", None) or missing_module(str(cause)))

    def pytest_plugin_registered(self, plugin, manager):
        if isinstance(plugin, types.ModuleType):  # a conftest: upstream's wait helpers, its own and tests.utils'
            for module in (plugin, sys.modules.get("tests.utils")):
                if module is not None:
                    self.patches.wait_helpers(module)
        for name in RUNNERS:
            cls = getattr(plugin, name, None)
            if isinstance(cls, type) and id(cls) not in self._patched and \
                    cls.__module__ == getattr(plugin, "__name__", None):
                self._patched.add(id(cls))
                self.patches.runner(cls)

    def pytest_configure(self, config):
        config.addinivalue_line("markers", "skip_global_cleanup: upstream's cleanup_fixture does nothing")
        import vllm

        self.patches.llm(vllm.LLM)  # the class object every `from vllm import LLM` shares

    def pytest_unconfigure(self, config):
        self.patches.undo()

    def pytest_collectreport(self, report):
        if report.failed:
            text = report.longreprtext
            self._collect_error(report.nodeid or ".", text, missing_module(text))

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, session, config, items):
        modules = {id(m): m for m in (getattr(item, "module", None) for item in items) if m is not None}
        for module in modules.values():  # a test file that imported a wait helper itself
            self.patches.wait_helpers(module)
        for item in items:
            if not self.patches.native:  # under native, upstream's cleanup_fixture runs as it is
                item.add_marker(pytest.mark.skip_global_cleanup)
            params = getattr(getattr(item, "callspec", None), "params", {})
            for value in params.values():
                if looks_like_hub_id(value):
                    self.rec.seed(value)

    def pytest_collection_finish(self, session):
        prefix = session.config.getoption("junitprefix", None)
        tests = []
        for i, item in enumerate(session.items):
            classname, name = junit_names(item.nodeid, prefix)
            step = {"name": name, "index": i, "classname": classname, "nodeid": item.nodeid,
                    "timeout_s": self.timeout_s}
            self._index[item.nodeid] = step
            tests.append(step)
        self.events.emit(vocab.COLLECTED, tests=tests)

    def _collect_error(self, where: str, text: str, module: str | None) -> None:
        classname, name = junit_names(where) if "::" in where or where.endswith(".py") else ("", where)
        self.events.emit(vocab.COLLECT_ERROR, where=where, classname=classname, name=name, module=module,
                         text=text[-8000:])

    # ------------------------------------------------------------------ tests
    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        step = self._index.get(item.nodeid)
        if step is None:  # not in the collected list (a plugin added it late): run it unrecorded
            yield
            return
        self._result = {"outcome": Outcome.PASSED}
        self.rec.begin_test(step)
        self.events.emit(vocab.STEP_START, step=step["name"], index=step["index"], timeout_s=step["timeout_s"],
                         log_offset=log_offset(), engine_process=vllm_engine_process())
        try:
            yield
        finally:
            self.rec.end_test()
            extra = {"live_engine_built_by": ", ".join(self.rec.live_built_by)} if self.rec.live_built_by else {}
            self.events.emit(vocab.STEP_END, step=step["name"], index=step["index"], expectations=[],
                             release_latency_s=self.rec.latency, log_offset=log_offset(),
                             wait_s=round(self.rec.wait_s, 6), **extra,
                             **{k: str(v) for k, v in self._result.items()})

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()
        if report.failed and call.excinfo is not None and "error_type" not in self._result:
            exc = call.excinfo.value
            self._result.update(phase=self.rec.phase_of(exc, call.when), error_type=call.excinfo.typename,
                                message=str(exc)[:4000])
            del exc

    def pytest_runtest_logreport(self, report):
        res = self._result
        if report.failed and res["outcome"] is not Outcome.FAILED:
            res["outcome"] = Outcome.FAILED
            res["traceback"] = report.longreprtext
            res.setdefault("error_type", "Failed")
            res.setdefault("message", f"failed on {report.when}")
        elif report.skipped and res["outcome"] is Outcome.PASSED:
            res["outcome"] = Outcome.SKIPPED
            if hasattr(report, "wasxfail"):
                res["message"] = f"xfail: {report.wasxfail}".rstrip(": ")
            else:
                reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
                res["message"] = reason.removeprefix("Skipped: ")
