"""What a teardown costs (`wait_s`), waits that can never end (live engines), leaks before they fail
and whether memory was still referenced or only not yet released — on the simulated device."""

from __future__ import annotations

import json
import time
import weakref
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness import cli
from harness.bisect.predicate import FailOn, StepVerdict, judge
from harness.worker import teardown
from harness.worker.engines import EngineRegistry
from tests.fixtures import GIB, read_by_name as _cases, teardown_context
from tests.sim_scenarios import lazy_release


def _run(tmp_path: Path, text: str) -> tuple[int, Path]:
    scenario = tmp_path / "s.yaml"
    scenario.write_text(text)
    code = cli.main([str(scenario), "--out", str(tmp_path / "out")])
    (run_dir,) = (tmp_path / "out").glob("*/*/")
    return code, run_dir


# --------------------------------------------------------------------------- live engines, unit
class Engine:
    """Any object the worker built (weak references must reach it)."""


class FakeProbe:
    """Used memory from a function of time, per device; ``pending`` when the device tells."""

    def __init__(self, used, pending=None, total=64 * GIB):
        self.used, self.pending, self.total = used, pending, total

    def read(self, devices):
        return [(self.used(), self.total) for _ in devices]


def test_a_wait_for_memory_only_a_live_engine_holds_stops_at_once_naming_who_built_it():
    engines = EngineRegistry()
    kept = Engine()  # a module-scoped fixture's engine
    engines.register(kept, "test_shared", 0, None, [20 * GIB])
    ctx = teardown_context(FakeProbe(lambda: 20 * GIB + GIB // 2), engines=engines)
    start = time.monotonic()
    with pytest.raises(teardown.LiveEngineHolds) as err:
        teardown.wait_memory(ctx, {"threshold": 0.1, "timeout_s": 240})
    assert time.monotonic() - start < 5 and ctx.waited_s < 5
    assert err.value.built_by == ["test_shared"] and "built by test_shared (still referenced" in str(err.value)
    assert isinstance(err.value, teardown.MemoryNotFreed)  # still the wait's own error for callers


def test_a_freed_engine_not_yet_released_is_waited_for():
    engines = EngineRegistry()
    obj = Engine()
    engines.register(obj, "test_a", 0, None, [20 * GIB])
    freed = time.monotonic()
    del obj  # freed: the device gives its memory back 0.3 s later
    probe = FakeProbe(lambda: (20 * GIB if time.monotonic() - freed < 0.3 else 0) + GIB // 2)
    ctx = teardown_context(probe, engines=engines)
    teardown.wait_memory(ctx, {"threshold": 0.1, "timeout_s": 10})
    assert 0.25 < ctx.waited_s < 5
    assert [e.built_by for e in engines.drain()] == ["test_a"]


def test_memory_pending_release_keeps_a_live_engines_wait_going():
    """A live engine over the threshold, but the device says more is on its way back: wait."""
    engines = EngineRegistry()
    kept = Engine()
    engines.register(kept, "test_shared", 0, None, [4 * GIB])
    start = time.monotonic()
    gone = lambda: time.monotonic() - start > 0.3  # noqa: E731
    probe = FakeProbe(lambda: 4 * GIB + (0 if gone() else 20 * GIB),
                      pending=lambda devices: [0 if gone() else 20 * GIB])
    ctx = teardown_context(probe, engines=engines)
    with pytest.raises(teardown.LiveEngineHolds):  # once the pending memory is back, only the live engine is left
        teardown.wait_memory(ctx, {"threshold": 1 * GIB, "timeout_s": 30})
    assert 0.25 < ctx.waited_s < 5


def test_an_engine_whose_core_was_shut_down_does_not_block_a_wait():
    engines = EngineRegistry()
    llm = Engine()  # kept alive by the test, its engine core shut down: it holds nothing any more
    llm.llm_engine = SimpleNamespace(engine_core=SimpleNamespace(shutdown=lambda: None))
    engines.register(llm, "first", 0, None, [20 * GIB])
    assert [e.built_by for e in engines.live()] == ["first"]
    ctx = teardown_context(FakeProbe(lambda: 21 * GIB), engines=engines)
    ctx.llm = llm
    teardown.run_action(ctx, {"name": "engine_core_shutdown"})
    with pytest.raises(teardown.MemoryNotFreed) as err:
        teardown.wait_memory(ctx, {"threshold": 0.1, "timeout_s": 0.3})
    assert not isinstance(err.value, teardown.LiveEngineHolds)
    assert weakref.ref(llm)() is llm and engines.live()


def test_an_engine_with_an_enginecore_process_is_gone_when_that_process_has_exited():
    """vLLM's default on a GPU: the EngineCore is a child process; the object freed is not enough."""
    import subprocess
    import sys

    from harness.worker import engines as engine_life

    before = engine_life.children()
    core = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        registry = EngineRegistry()
        obj = Engine()
        registry.register(obj, "first", 0, None, [GIB], sorted(engine_life.children() - before))
        assert registry.engines[0].pids == (core.pid,)
        del obj
        assert registry.drain() == [] and registry.live() == []  # freed, its process still running
        seen = registry.engines[0].seen_running_at
        core.kill()
        core.wait()
        (gone,) = registry.drain()
        assert gone.built_by == "first" and gone.freed_at >= seen >= gone.object_freed_at
    finally:
        core.kill()
        core.wait()


# --------------------------------------------------------------------------- live engines, end to end
def sim_header(name: str, release_delay_s: float) -> str:
    """A simulated MI250 GCD (64 GiB) whose engines take 0.3 of it: two fit."""
    return (f"version: 1\nname: {name}\nplatform: rocm\nbackend: sim\n"
            f"sim: {{construct_s: 0.05, release_delay_s: {release_delay_s}}}\n"
            "timeouts: {step: 300, worker_start: 30}\ndefaults: {gpu_memory_utilization: 0.3}\n")


LIVE = sim_header("live", 0.3) + """\
teardown_profiles:
  frozen_settle:            # the engine stays alive in a frozen reference cycle
    before: [{wait_memory: {threshold: 0.1, timeout_s: 240}}]
    after: [del_llm, gc_collect]
  freed_settle:             # the same wait, the engine really freed: the wait ends after the reclaim
    before: [{wait_memory: {threshold: 0.1, timeout_s: 240}}]
    after: [del_llm, gc_unfreeze, gc_collect]
variants:
  frozen: {profile: frozen_settle}
  freed: {profile: freed_settle}
steps:
  - {name: first}
  - {name: second}
"""


def test_a_settle_wait_on_a_live_engine_fails_fast_as_teardown_error_naming_its_builder(tmp_path):
    code, rd = _run(tmp_path, LIVE)
    frozen, freed = _cases(rd / "frozen.xml"), _cases(rd / "freed.xml")
    second = frozen["second"]
    assert second.failure_class.value == "teardown_error"
    assert second.properties["live_engine_built_by"] == "first"
    assert float(second.properties["wait_s"]) < 5  # its timeout is 240 s
    assert "held by a live engine built by first" in second.message
    # the engine that was freed is only waited for until the device gives it back
    assert freed["second"].outcome.value == "passed" and "live_engine_built_by" not in freed["second"].properties
    assert 0.2 < float(freed["second"].properties["wait_s"]) < 5
    assert code == 1


# --------------------------------------------------------------------------- leaks before they fail
LEAKY = sim_header("leaky", 2) + """\
variants:
  bare: {profile: bare}
  legacy: {profile: legacy}
  fixed: {profile: fixed}
baseline: bare
steps:
  - {name: first}
  - {name: second}
"""


def test_a_leak_that_fails_nothing_yet_is_listed_with_what_held_it(tmp_path, capsys):
    code, rd = _run(tmp_path, LEAKY)
    summary = json.loads((rd / "summary.json").read_text())
    assert summary["counts"]["bare"]["failed"] == 0 and summary["counts"]["legacy"]["failed"] == 0
    leaks = summary["leaks"]
    assert [leak["residue_bytes"] for leak in leaks] == sorted((leak["residue_bytes"] for leak in leaks), reverse=True)
    by = {(leak["variant"], leak["test"]): leak for leak in leaks}
    engine = 0.3 * 64 * GIB
    # bare: the frozen engine lives on; legacy: freed at once, the device gives it back 2 s later
    for test in ("first", "second"):
        assert by[("bare", test)]["status"] == "still referenced"
        assert by[("bare", test)]["device"] == "0"
        assert abs(by[("bare", test)]["residue_bytes"] - engine) < GIB
        assert by[("legacy", test)]["status"].startswith("freed, not yet released by the device (")
    # PR #43023's wait is for (1 - 0.3) x total: at 0.3 it does not wait, and the memory is still on its way back
    assert all(leak["status"].startswith("freed, not yet released") for leak in leaks if leak["variant"] == "fixed")
    md = (rd / "report.md").read_text()
    assert "### Leaks" in md and "still referenced" in md
    assert "Leaks" in (rd / "report.html").read_text()
    capsys.readouterr()
    assert cli.main(["report", str(rd), "--leaks"]) == 0
    out = capsys.readouterr().out
    assert "bare / first: 19.20 GiB left on device 0 (still referenced)" in out
    assert "legacy / second: 19.20 GiB left on device 0 (freed, not yet released by the device" in out
    assert code == 0


# --------------------------------------------------------------------------- cost and slower teardowns
def test_the_fix_costs_its_waits_per_test_and_diff_lists_slower_teardowns(tmp_path, capsys):
    code, rd = _run(tmp_path, lazy_release("cost", ["a", "b", "c"], release_delay_s=0.6))
    summary = json.loads((rd / "summary.json").read_text())
    cost = summary["teardown_cost"]
    assert cost["without_fix"]["total_s"] < 0.1  # legacy never waits
    fixed = cost["with_fix"]
    assert fixed["n"] == 3 and 0.5 < fixed["median_s"] < 3 and fixed["total_s"] > 1.5
    assert fixed["vs_baseline_per_test_s"] == pytest.approx(fixed["per_test_s"] - cost["without_fix"]["per_test_s"])
    assert "the fix costs" in (rd / "report.md").read_text()
    # culprits say it was freed, the device had not given it back yet
    culprit = next(r for r in summary["cases"] if r["step"] == "b")["variants"]["without_fix"]["culprit"]
    assert culprit["step"] == "a" and culprit["status"].startswith("freed, not yet released by the device")

    base, cand = str(rd / "without_fix.xml"), str(rd / "with_fix.xml")
    capsys.readouterr()
    assert cli.main(["diff", base, cand]) == 0  # default: 10 s and 2x
    assert "slower teardowns" not in capsys.readouterr().out
    assert cli.main(["diff", base, cand, "--wait-regression", "0.3"]) == 1
    out = capsys.readouterr().out
    assert "slower teardowns (wait grew by more than 0.3 s and 2x):" in out and "cost::b:" in out
    assert cli.main(["diff", base, cand, "--wait-regression", "0.3", "--no-fail"]) == 0
    capsys.readouterr()
    assert cli.main(["diff", base, cand, "--wait-regression", "0.3", "--json"]) == 1
    slower = json.loads(capsys.readouterr().out)["slower_teardowns"]
    assert {s["case"] for s in slower} == {"cost::a", "cost::b", "cost::c"}
    assert cli.main(["diff", base, cand, "--wait-regression", "-1"]) == 2
    assert code == 0


def test_fail_on_wait_judges_the_wait_and_refuses_nonsense():
    assert str(FailOn.parse("wait>30")) == "wait>30" and FailOn.parse("wait > 2.5").limit_s == 2.5
    with pytest.raises(Exception, match="wait>SECONDS"):
        FailOn.parse("wait>")
    case = lambda name, wait: SimpleNamespace(  # noqa: E731
        name=name, properties={"wait_s": str(wait), "mem_after_construct_bytes": "1"},
        outcome=SimpleNamespace(value="passed"), failure_class=None, message="")
    verdict, reason = judge([case("a", 1.0), case("b", 31.5)], FailOn.parse("wait>30"))
    assert verdict is StepVerdict.BAD and reason == "step 'b' waited 31.50 s for memory (limit 30 s)"
    assert judge([case("a", 29.0)], FailOn.parse("wait>30"))[0] is StepVerdict.GOOD


# --------------------------------------------------------------------------- bisect --fail-on wait>S
def test_bisect_fail_on_wait_finds_the_commit_that_added_the_slow_wait(work, capsys):
    """fakeengine's teardown waits for the memory; at commit 2 its wait polls every 4 s instead
    of every 50 ms, so each teardown waits 4 s for a release that took 0.5 s."""
    from tests.bisect_fixtures import GOOD_TEARDOWN, RECIPE_ARGS, commit_files, engine_files, git, main

    slow = GOOD_TEARDOWN.replace('{"timeout_s": 20}', '{"timeout_s": 60, "poll_s": 4}')
    assert slow != GOOD_TEARDOWN
    repo = work / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    shas = []
    for i in range(3):
        files = {**engine_files(f"0.{i}", False), "fakeengine/teardown.py": slow if i == 2 else GOOD_TEARDOWN}
        shas.append(commit_files(repo, files, f"commit {i}" + (": poll the memory every 4 s" if i == 2 else "")))
    rc = main(["bisect", "scenario/fakeengine.yaml", "--out", "results", "--repo", "repo", "--good", shas[0],
               "--bad", shas[-1], "--step", "first", "--fail-on", "wait>2", *RECIPE_ARGS])
    out = capsys.readouterr()
    text = out.out + out.err
    assert rc == 0, text
    assert f"first bad revision: {shas[2][:10]} commit 2: poll the memory every 4 s" in text
    assert "waited 4." in text and "for memory (limit 2 s)" in text


# --------------------------------------------------------------------------- upstream's own wait helpers
def test_upstream_wait_helpers_are_timed_and_a_timeout_with_a_live_engine_names_it():
    import types

    from harness.upstream.builds import Recorder, TaggedEvents
    from harness.upstream.patches import Patches

    emitted = []
    sink = SimpleNamespace(emit=lambda event, **fields: emitted.append((event, fields)))
    engines = EngineRegistry()
    runner = SimpleNamespace(engines=engines, probe=FakeProbe(lambda: 20 * GIB), devices=[0])
    rec = Recorder({"pytest": {}, "profile": {"before": [], "after": []}}, runner, TaggedEvents(sink))
    rec.begin_test({"name": "test_b", "index": 1})

    def wait_for_gpu_memory_to_clear(devices, threshold_bytes, timeout_s=0.2):  # upstream's, as it fails
        time.sleep(timeout_s)
        raise ValueError(f"Memory of devices {devices} not free after {timeout_s} seconds")

    utils, conftest = types.ModuleType("tests.utils"), types.ModuleType("conftest")
    utils.wait_for_gpu_memory_to_clear = conftest.wait_for_gpu_memory_to_clear = wait_for_gpu_memory_to_clear
    patches = Patches(rec)
    patches.wait_helpers(utils)
    patches.wait_helpers(conftest)
    patches.wait_helpers(conftest)  # seen twice: wrapped once
    assert utils.wait_for_gpu_memory_to_clear is conftest.wait_for_gpu_memory_to_clear
    assert utils.wait_for_gpu_memory_to_clear is not wait_for_gpu_memory_to_clear

    with pytest.raises(ValueError) as err:  # nothing alive: upstream's own error, its time counted
        conftest.wait_for_gpu_memory_to_clear([0], 1)
    assert not isinstance(err.value, teardown.LiveEngineHolds) and 0.2 <= rec.wait_s < 2
    kept = Engine()  # a module fixture's engine
    engines.register(kept, "test_a", 0, 0, [19 * GIB])
    with pytest.raises(teardown.LiveEngineHolds) as err:
        utils.wait_for_gpu_memory_to_clear([0], 1)
    assert isinstance(err.value, ValueError) and "live engine built by test_a" in str(err.value)
    assert "not free after 0.2 seconds" in str(err.value) and rec.live_built_by == ["test_a"]
    assert 0.4 <= rec.wait_s < 4
    actions = [f for e, f in emitted if e == "action"]
    assert [a["name"] for a in actions] == ["wait_for_gpu_memory_to_clear"] * 2 and not actions[1]["ok"]
    patches.undo()
    assert utils.wait_for_gpu_memory_to_clear is wait_for_gpu_memory_to_clear
    assert conftest.wait_for_gpu_memory_to_clear is wait_for_gpu_memory_to_clear
