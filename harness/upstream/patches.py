"""The three replacements the pytest plugin makes, each undone when the session ends.

- ``vllm.LLM.__init__``: every engine a test builds, through a runner or directly, is recorded and
  gets the run's engine-argument mapping. vLLM has no per-construction hook (its general plugins
  load once per process), so the class attribute is replaced: the last resort, undone at the end.
- ``VllmRunner.__exit__`` / ``HfRunner.__exit__`` (on the classes in the checkout's
  ``tests/conftest.py``, so tests that import a runner directly are covered too): the variant's
  teardown profile instead of upstream's sequence; under ``native``, upstream's own ``__exit__``,
  wrapped only to record the memory once it has returned. Their ``__init__`` is wrapped only to
  record the build (``HfRunner``'s model is built there) and to seed the model name.

`pytest.MonkeyPatch` keeps the originals and restores them exactly.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest

from harness.upstream.builds import Recorder

RUNNERS = ("VllmRunner", "HfRunner")


class Patches:
    def __init__(self, recorder: Recorder, native: bool = False):
        self.recorder, self.native = recorder, native
        self._mp = pytest.MonkeyPatch()
        self.patched: list[str] = []

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

    def _replace(self, cls: type, attr: str, value: Any) -> None:
        self._mp.setattr(cls, attr, value)
        self.patched.append(f"{cls.__module__}.{cls.__qualname__}.{attr}")

    def undo(self) -> None:
        self._mp.undo()
        self.patched.clear()
