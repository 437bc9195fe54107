"""A broken scenario turns the nightly red: run.py's exit codes end to end on the simulated device."""

from __future__ import annotations

import json

from harness import cli

BROKEN = """\
version: 1
name: broken
platform: rocm
backend: sim
sim: {construct_s: 0.01}
timeouts: {step: 30, worker_start: 30}
defaults: {model: m, gpu_memory_utilization: 0.9}
variants:
  without_fix: {profile: fixed}
  with_fix: {profile: fixed}
steps:
"""
# two identical greedy sets are never distinct: the expectation fails in every step, in both variants
STEP = ("  - {name: %s, workload: {prompt_set: short, sampling: [{temperature: 0.0, max_tokens: 4}, "
        "{temperature: 0.0, max_tokens: 4}]}, expect: [{distinct: [[0, 1]]}]}\n")


def _run(tmp_path, *extra):
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN + STEP % "s1" + STEP % "s2")
    out = tmp_path / "out"
    code = cli.main([str(path), "--out", str(out), *extra])
    (rd,) = (out / "broken").iterdir()
    return code, json.loads((rd / "summary.json").read_text()), rd


def test_a_scenario_whose_every_step_fails_exits_1_as_baseline_broken(tmp_path):
    code, summary, rd = _run(tmp_path)
    assert code == 1 and summary["exit_code"] == 1
    assert summary["verdict"] == "baseline broken"
    assert summary["candidates"]["with_fix"]["not_allowed"] == ["s1 (assertion)", "s2 (assertion)"]
    assert (rd / "report.md").read_text().startswith("## broken: FAIL (baseline broken, exit 1)")


def test_allowed_failures_keep_the_run_green_and_report_remembers(tmp_path, capsys):
    code, summary, rd = _run(tmp_path, "--allow", "assertion")
    assert code == 0 and summary["verdict"] == "not reproduced" and summary["allow"] == ["assertion"]
    assert cli.main(["report", str(rd)]) == 0  # the run's --allow is kept in run.json
    assert cli.main(["report", str(rd), "--allow", "timeout"]) == 1  # and can be overridden


def test_an_unknown_allow_class_exits_2_before_running(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN + STEP % "s1")
    assert cli.main([str(path), "--out", str(tmp_path / "out"), "--allow", "asertion"]) == 2
    assert "did you mean 'assertion'" in capsys.readouterr().err and not (tmp_path / "out").exists()
