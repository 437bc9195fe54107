"""The three replacements the pytest plugin makes, each undone when the session ends.

- ``vllm.LLM.__init__``: every engine a test builds, through a runner or directly, is recorded and
  gets the run's engine-argument mapping. vLLM has no per-construction hook (its general plugins
  load once per process), so the class attribute is replaced: the last resort, undone at the end.
- ``VllmRunner.__exit__`` / ``HfRunner.__exit__`` (on the classes in the checkout's
  ``tests/conftest.py``, so tests that import a runner directly are covered too): the variant's
  teardown profile instead of upstream's sequence; under ``native``, upstream's own ``__exit__``,
  wrapped only to record the memory once it has returned. Their ``__init__`` is wrapped only to
  record the build (``HfRunner``'s model is built there) and to seed the model name.

Upstream's own memory-wait helpers (`WAIT_HELPERS`, found by name in the checkout's
``tests/utils.py`` and wherever a conftest or test module imported them) are wrapped, not replaced:
they run as upstream wrote them, and the time inside them is the test's teardown cost
(`Recorder.helper_waited`); one that fails while engines of this process are still alive fails
naming them.

`pytest.MonkeyPatch` keeps the originals and restores them exactly.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import pytest

from harness.upstream.builds import Recorder

RUNNERS = ("VllmRunner", "HfRunner")
#: upstream's memory waits (tests/utils.py): PR #43023's, and the later settle wait
WAIT_HELPERS = ("wait_for_gpu_memory_to_clear", "wait_for_rocm_memory_to_settle")


class Patches:
    def __init__(self, recorder: Recorder, native: bool = False):
        self.recorder, self.native = recorder, native
        self._mp = pytest.MonkeyPatch()
        self.patched: list[str] = []
        self._wrapped: dict[int, Any] = {}  # id(original helper) -> its wrapper, shared by every module

    def wait_helpers(self, module: Any) -> None:
        """Wrap the memory-wait helpers that ``module`` holds (a conftest, tests.utils, a test file)."""
        for name in WAIT_HELPERS:
            original = getattr(module, name, None)
            if not callable(original) or getattr(original, "__wrapped_wait__", False):
                continue
            if id(original) not in self._wrapped:
                self._wrapped[id(original)] = self._observed(name, original)
            self._replace(module, name, self._wrapped[id(original)])

    def _observed(self, name: str, original: Any) -> Any:
        rec = self.recorder

        @functools.wraps(original)
        def helper(*args, **kwargs):
            start, error = time.monotonic(), None
            try:
                return original(*args, **kwargs)
            except Exception as e:
                error = e
                raise
            finally:
                named = rec.helper_waited(name, time.monotonic() - start, error)
                if named is not None:
                    raise named from error

        helper.__wrapped_wait__ = True
        return helper

    def llm(self, cls: type) -> None:
        rec, original = self.recorder, cls.__init__

        @functools.wraps(original)
        def __init__(llm, *args, **kwargs):
            kwargs, subs = rec.engine_args(args, kwargs)
            model = kwargs.get("model", args[0] if args else None)
            rec.construct(llm, rec.via or "LLM", model, kwargs.get("gpu_memory_utilization"), subs,
                          lambda: original(llm, *args, **kwargs))

        rec.via = None
        self._replace(cls, "__init__", __init__)

    def runner(self, cls: type) -> None:
        """Replace one of upstream's runner classes' ``__exit__`` with the profile (``native``: wrap it)."""
        rec, name = self.recorder, cls.__name__
        init, original_exit = cls.__init__, cls.__exit__
        attr = "llm" if name == "VllmRunner" else "model"
        if name == "VllmRunner":
            @functools.wraps(init)
            def __init__(runner, *args, **kwargs):
                rec.via = "VllmRunner"  # the LLM built inside is this runner's
                try:
                    init(runner, *args, **kwargs)
                finally:
                    rec.via = None
        else:
            @functools.wraps(init)
            def __init__(runner, model_name=None, *args, **kwargs):
                sub = rec.seed(model_name)
                rec.construct(runner, "HfRunner", model_name, None, [sub] if sub else [],
                              lambda: init(runner, model_name, *args, **kwargs))

        if self.native:
            @functools.wraps(original_exit)
            def __exit__(runner, exc_type, exc, tb):
                return rec.observe_exit(runner, attr, name, lambda: original_exit(runner, exc_type, exc, tb))
        else:
            def __exit__(runner, exc_type, exc, tb):
                rec.teardown(runner, attr, name)
        self._replace(cls, "__init__", __init__)
        self._replace(cls, "__exit__", __exit__)

    def _replace(self, owner: Any, attr: str, value: Any) -> None:
        self._mp.setattr(owner, attr, value)
        where = f"{owner.__module__}.{owner.__qualname__}" if isinstance(owner, type) else owner.__name__
        self.patched.append(f"{where}.{attr}")

    def undo(self) -> None:
        self._mp.undo()
        self.patched.clear()
