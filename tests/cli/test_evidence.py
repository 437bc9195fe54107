"""No green without evidence: a pass that built no engine proves nothing, an incomplete run or a
collection problem never exits 0 (`run` and `report` here; `merge` in tests/ci/test_shard.py), and
a run directory interrupted at any moment still gets its report, marked INCOMPLETE."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import cli
from harness.model import FailureClass, MemorySample, Outcome, StepResult, VariantResult
from harness.results import junit
from harness.run import runner
from tests.fixtures import GIB
from tests.sim_scenarios import bare_vs_fixed

VRAM_MESSAGE = ("ValueError: Free memory on device cuda:0 (5.90/64.00 GiB) on startup is less than desired "
                "GPU memory utilization (0.9, 57.60 GiB).")


def _mem(*labels: str) -> list[MemorySample]:
    return [MemorySample(label, float(i), GIB, 64 * GIB) for i, label in enumerate(labels)]


def _leaky_first() -> StepResult:
    return StepResult("test_a", 0, Outcome.PASSED, memory=_mem("before_construct", "after_construct", "after_del_llm"))


def _vram(name: str, pytest_suite: bool) -> StepResult:
    res = StepResult(name, 0, Outcome.FAILED, FailureClass.VRAM_CONSTRUCTION, message=VRAM_MESSAGE,
                     memory=_mem("before_construct"))
    if pytest_suite:
        res.builds = [{"build": 0, "via": "VllmRunner", "memory": {"before_construct": GIB}, "actions": {},
                       "error": VRAM_MESSAGE}]
    return res


def _passed(name: str, pytest_suite: bool, built: bool) -> StepResult:
    labels = ("before_construct", "after_construct", "after_del_llm") if built else ()
    res = StepResult(name, 0, Outcome.PASSED, memory=_mem(*labels))
    if pytest_suite and built:
        res.builds = [{"build": 0, "via": "VllmRunner", "memory": {lab: GIB for lab in labels}, "actions": {}}]
    return res


def _run_dir(root: Path, candidate: list[StepResult], baseline: list[StepResult] | None = None,
             **meta) -> Path:
    """A run directory as the runner writes it: run.json and each variant's JUnit (results/junit.py)."""
    run_dir = root / "demo" / "run1"
    (run_dir / "logs").mkdir(parents=True)
    for name, steps in (("without_fix", baseline), ("with_fix", candidate)):
        if steps is not None:
            junit.write_variant(run_dir / f"{name}.xml", "demo", [VariantResult(name, "legacy", steps)], 1,
                                {"variant": name})
    run = {"version": 1, "scenario": "demo", "run_id": "run1", "baseline": "without_fix",
           "variants": ["without_fix", "with_fix"], "repeat": 1, "incomplete": False, **meta}
    (run_dir / "run.json").write_text(json.dumps(run))
    return run_dir


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


# --------------------------------------------------------------------------- a pass without an engine
@pytest.mark.parametrize("pytest_suite", [True, False], ids=["pytest-suite", "steps"])
def test_a_vram_failure_that_passes_without_building_an_engine_is_not_proven(tmp_path, capsys, pytest_suite):
    baseline = [_leaky_first(), _vram("test_b", pytest_suite)]
    run_dir = _run_dir(tmp_path, [_passed("test_a", pytest_suite, True), _passed("test_b", pytest_suite, False)],
                       baseline)
    code = cli.main(["report", str(run_dir)])
    out = capsys.readouterr().out
    summary = _summary(run_dir)
    assert code == 1 and summary["exit_code"] == 1
    assert summary["verdict"] == "not proven"
    assert any("passed here without building an engine" in r and "test_b" in r for r in summary["reasons"])
    (b,) = [c for c in summary["transitions"]["with_fix"]["cases"] if c["step"] == "test_b"]
    assert b["transition"] == "not proven"
    assert "not proven" in out and "fix confirmed" not in out
    md = (run_dir / "report.md").read_text()
    assert md.startswith("## demo: FAIL (not proven, exit 1)") and "| not proven | test_b |" in md
    assert "not proven" in (run_dir / "report.html").read_text()


@pytest.mark.parametrize("pytest_suite", [True, False], ids=["pytest-suite", "steps"])
def test_the_same_pass_with_an_engine_built_confirms_the_fix(tmp_path, capsys, pytest_suite):
    baseline = [_leaky_first(), _vram("test_b", pytest_suite)]
    run_dir = _run_dir(tmp_path, [_passed("test_a", pytest_suite, True), _passed("test_b", pytest_suite, True)],
                       baseline)
    assert cli.main(["report", str(run_dir)]) == 0
    assert _summary(run_dir)["verdict"] == "fix confirmed"


def test_a_candidate_that_skipped_every_leaky_step_is_not_proven_and_not_green(tmp_path, capsys):
    baseline = [_leaky_first(), _vram("test_b", True)]
    skipped = StepResult("test_b", 0, Outcome.SKIPPED, message="needs ROCm")
    run_dir = _run_dir(tmp_path, [_passed("test_a", True, True), skipped], baseline)
    assert cli.main(["report", str(run_dir)]) == 1
    assert _summary(run_dir)["verdict"] == "not proven"


# --------------------------------------------------------------------------- one exit-code rule
def test_report_of_an_incomplete_run_never_exits_0(tmp_path, capsys):
    baseline = [_leaky_first(), _vram("test_b", False)]
    run_dir = _run_dir(tmp_path, [_passed("test_a", False, True), _passed("test_b", False, True)], baseline,
                       incomplete=True)
    assert cli.main(["report", str(run_dir)]) == 1
    summary = _summary(run_dir)
    assert summary["verdict"] == "fix confirmed" and summary["exit_code"] == 1
    assert "INCOMPLETE" in capsys.readouterr().out


def test_report_sees_a_collection_problem_recorded_in_the_run(tmp_path, capsys):
    baseline = [_leaky_first(), _vram("test_b", True)]
    problem = "tests/samplers/test_x.py: cannot be collected: No module named 'tblib'"
    run_dir = _run_dir(tmp_path, [_passed("test_a", True, True), _passed("test_b", True, True)], baseline,
                       problems=[problem])
    assert cli.main(["report", str(run_dir)]) == 3
    assert _summary(run_dir)["exit_code"] == 3
    assert any(problem in r for r in _summary(run_dir)["reasons"])


# --------------------------------------------------------------------------- interrupts
def _interrupt_after(monkeypatch, target, name: str) -> None:
    """Ctrl-C right after ``target.name`` returned (or instead of it, for a spawn)."""
    original = getattr(target, name)

    def interrupted(*args, **kwargs):
        if name != "spawn":
            original(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(target, name, interrupted)


@pytest.mark.parametrize("moment", ["run dir created", "first worker spawned"])
def test_an_interrupt_at_any_moment_leaves_a_report_marked_incomplete(tmp_path, monkeypatch, capsys, moment):
    from harness.run import procs

    scenario = tmp_path / "s.yaml"
    scenario.write_text(bare_vs_fixed("early", release_delay_s=0.1))
    if moment == "run dir created":
        _interrupt_after(monkeypatch, runner, "make_run_dir")
    else:
        _interrupt_after(monkeypatch, procs, "spawn")
    out = tmp_path / "out"
    assert cli.main([str(scenario), "--out", str(out)]) == 130
    (run_dir,) = (out / "early").iterdir()
    run = json.loads((run_dir / "run.json").read_text())
    assert run["incomplete"] is True and run["finished"]
    summary = _summary(run_dir)
    assert summary["incomplete"] is True and summary["exit_code"] != 0
    assert "INCOMPLETE" in (run_dir / "report.md").read_text()
    assert "Traceback" not in capsys.readouterr().err
