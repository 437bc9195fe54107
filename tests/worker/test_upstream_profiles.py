"""The built-in profiles against upstream's code: the shutdown's timeout and ignored errors (9aaf83ef,
ROCm's vLLM), the settle wait (memory stable for stable_s below the threshold, never below a floor),
and `validate --profiles` naming the commit or PR each reproduces."""

from __future__ import annotations

import threading
import time

import pytest

from harness import cli
from harness.worker import teardown
from harness.scenario.profiles import BUILTIN_PROFILES, PROFILE_SOURCES
from tests.fixtures import GIB, FakeProbe, teardown_context


class Core:
    def __init__(self, error: Exception | None = None):
        self.calls, self.error = [], error

    def shutdown(self, timeout=None):
        self.calls.append(timeout)
        if self.error:
            raise self.error


def _llm(core: Core):
    class Engine:
        engine_core = core

    class LLM:
        llm_engine = Engine()

    return LLM()


def test_engine_core_shutdown_passes_the_timeout_and_ignores_errors_only_when_asked(capsys):
    core = Core()
    ctx = teardown_context(FakeProbe(0))
    ctx.llm = _llm(core)
    teardown.run_action(ctx, {"name": "engine_core_shutdown", "params": {"timeout_s": 60.0}})
    teardown.run_action(ctx, {"name": "engine_core_shutdown", "params": {}})
    assert core.calls == [60.0, None]
    ctx.llm = _llm(Core(RuntimeError("engine core died")))
    with pytest.raises(RuntimeError, match="engine core died"):
        teardown.run_action(ctx, {"name": "engine_core_shutdown", "params": {}})
    teardown.run_action(ctx, {"name": "engine_core_shutdown", "params": {"ignore_errors": True}})
    assert "ignored RuntimeError: engine core died" in capsys.readouterr().out


def test_settle_waits_until_memory_has_been_stable_for_stable_s():
    probe = FakeProbe(70 * GIB)
    ctx = teardown_context(probe)
    # under the threshold at 0.2 s, then still moving by more than 512 MiB until 0.6 s
    threading.Timer(0.2, lambda: setattr(probe, "used", 3 * GIB)).start()
    threading.Timer(0.6, lambda: setattr(probe, "used", 1 * GIB)).start()
    start = time.monotonic()
    teardown.wait_memory(ctx, {"threshold": "auto", "timeout_s": 5, "stable_s": 0.5})
    took = time.monotonic() - start
    assert 1.05 <= took < 1.6, took  # 0.6 s until it stopped moving, then 0.5 s stable
    assert ctx.released_at - start == pytest.approx(0.6, abs=0.1)


def test_settle_never_asks_for_less_than_the_floor():
    ctx = teardown_context(FakeProbe(3 * GIB), util=0.99)  # auto threshold: 0.8 GiB, under what the driver keeps
    with pytest.raises(teardown.MemoryNotFreed):
        teardown.wait_memory(ctx, {"timeout_s": 0.2})
    teardown.wait_memory(ctx, {"timeout_s": 0.2, "floor_bytes": 4 * GIB})


def test_validate_profiles_names_what_each_reproduces(capsys):
    assert cli.main(["validate", "--profiles"]) == 0
    out = capsys.readouterr().out
    assert set(PROFILE_SOURCES) == set(BUILTIN_PROFILES)
    for name in BUILTIN_PROFILES:
        assert f"{name}: {PROFILE_SOURCES[name]}" in out
    assert "9aaf83ef" in PROFILE_SOURCES["legacy"] and "#43023" in PROFILE_SOURCES["fixed"]
    assert "engine_core_shutdown {'ignore_errors': True}, del_llm, cleanup_dist_env" in out
