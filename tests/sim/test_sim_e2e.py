"""The simulated MI250 end to end: the verdict with a real fix, and with the fix removed."""

from __future__ import annotations

import json
import textwrap

from harness import cli

SCENARIO = textwrap.dedent("""
    version: 1
    name: sim_e2e
    platform: rocm
    backend: sim
    sim: {total_gib: 64, release_delay_s: 1.0, construct_s: 0.05}
    timeouts: {step: 30, worker_start: 30}
    defaults: {model: m, gpu_memory_utilization: 0.92}
    variants:
      without_fix: {profile: legacy}
      with_fix: {profile: %s}
    steps:
      - {name: s1, workload: {prompt_set: short, sampling: [{temperature: 0.0, max_tokens: 8}], runs: 2}, expect: [identical_runs]}
      - {name: s2, workload: {prompt_set: short, sampling: [{temperature: 0.0, max_tokens: 8}]}, expect: [lengths]}
      - {name: s3, workload: {prompt_set: short, sampling: [{temperature: 0.0, max_tokens: 8}]}, expect: [lengths]}
""")


def _run(tmp_path, fixed_profile):
    path = tmp_path / "s.yaml"
    path.write_text(SCENARIO % fixed_profile)
    code = cli.main([str(path), "--out", str(tmp_path / "out")])
    (rd,) = (tmp_path / "out" / "sim_e2e").iterdir()
    return code, json.loads((rd / "summary.json").read_text())


def _classes(summary, variant):
    return [c["variants"][variant]["failure_class"] for c in summary["cases"]]


def test_real_fix_is_confirmed(tmp_path):
    code, summary = _run(tmp_path, "fixed")
    assert _classes(summary, "without_fix") == ["none", "vram_construction", "vram_construction"]
    assert _classes(summary, "with_fix") == ["none", "none", "none"]
    assert summary["verdict"] == "fix confirmed" and code == 0


def test_removing_the_fix_fails_the_run(tmp_path):
    code, summary = _run(tmp_path, "bare")  # `del llm; gc.collect()`: vLLM's frozen objects survive
    assert "vram_construction" in _classes(summary, "with_fix")
    assert summary["verdict"] == "fix insufficient" and code == 1


def test_a_relative_results_directory_works_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the workers start elsewhere (the repository root)
    (tmp_path / "s.yaml").write_text(SCENARIO % "fixed")
    assert cli.main(["s.yaml", "--out", "out"]) == 0
    (rd,) = (tmp_path / "out" / "sim_e2e").iterdir()
    assert json.loads((rd / "summary.json").read_text())["verdict"] == "fix confirmed"
