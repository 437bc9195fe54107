"""Teardown actions on a controllable fake device: thresholds, wait_memory latency, errors."""

from __future__ import annotations

import threading
import time

import pytest

from harness.worker import teardown
from tests.fixtures import GIB, FakeProbe, teardown_context

def test_auto_threshold_is_one_minus_utilisation_of_total():
    ctx = teardown_context(FakeProbe(0), util=0.9)
    assert ctx.threshold_bytes("auto") == [int(0.1 * 80 * GIB)]
    assert ctx.threshold_bytes(0.25) == [int(0.25 * 80 * GIB)]
    assert ctx.threshold_bytes(5 * GIB) == [5 * GIB]


def test_wait_memory_returns_within_a_poll_of_the_release():
    probe = FakeProbe(70 * GIB)
    ctx = teardown_context(probe)
    release_at = time.monotonic() + 0.5
    threading.Timer(0.5, lambda: setattr(probe, "used", 1 * GIB)).start()
    teardown.wait_memory(ctx, {"threshold": "auto", "timeout_s": 5})
    late = time.monotonic() - release_at
    assert 0 <= late < 0.1, late
    assert ctx.released_at is not None


def test_wait_memory_times_out_with_upstreams_wording():
    ctx = teardown_context(FakeProbe(70 * GIB))
    with pytest.raises(teardown.MemoryNotFreed, match=r"Memory of devices \[0\] not free after 0.2 seconds"):
        teardown.wait_memory(ctx, {"timeout_s": 0.2})


def test_del_llm_drops_the_only_reference():
    class Engine:
        pass

    ctx = teardown_context(FakeProbe(0))
    ctx.llm = Engine()
    teardown.run_action(ctx, {"name": "del_llm"})
    assert ctx.llm is None


def test_engine_core_shutdown_calls_through_the_llm(monkeypatch):
    calls = []

    class Core:
        def shutdown(self):
            calls.append("shutdown")

    class LLM:
        class llm_engine:  # noqa: N801 - mirrors vLLM's attribute path
            engine_core = Core()

    ctx = teardown_context(FakeProbe(0))
    ctx.llm = LLM()
    teardown.run_action(ctx, {"name": "engine_core_shutdown"})
    assert calls == ["shutdown"]


def test_call_action_runs_the_users_function(tmp_path):
    (tmp_path / "myhooks.py").write_text("def mark(ctx, value):\n    ctx.marked = value\n")
    ctx = teardown_context(FakeProbe(0))
    ctx.scenario_dir = str(tmp_path)
    teardown.run_action(ctx, {"name": "call", "params": {"target": "myhooks:mark", "kwargs": {"value": 7}}})
    assert ctx.marked == 7


def test_is_free_judges_readings_already_taken():
    """The worker asks about the sample it just recorded (the same numbers its events show), not a
    second reading that may differ."""
    probe = FakeProbe(70 * GIB)
    ctx = teardown_context(probe, util=0.9)
    assert not ctx.is_free()
    assert ctx.is_free(readings=[(1 * GIB, 80 * GIB)])
    probe.used = 1 * GIB
    assert ctx.is_free() and not ctx.is_free(readings=[(70 * GIB, 80 * GIB)])
    assert ctx.threshold_bytes("auto", [(0, 40 * GIB)]) == [int(0.1 * 40 * GIB)]


def test_every_action_and_check_a_scenario_may_name_has_its_code():
    from harness.worker import expect
    from harness.scenario import specs

    assert list(teardown.ACTIONS) == list(specs.ACTIONS) and list(expect.CHECKS) == list(specs.CHECKS)
    assert all(teardown.ACTIONS[n].params == p.params for n, p in specs.ACTIONS.items())
    assert all(expect.CHECKS[n].validate is v and expect.CHECKS[n].doc for n, v in specs.CHECKS.items())
