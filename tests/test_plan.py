"""Planning: rehearsal substitutions on a machine without the scenario's platform."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.run import plan
from harness.scenario import schema as scenario
from harness.errors import HarnessError

ROOT = Path(__file__).resolve().parent.parent
MI250 = ROOT / "scenarios/sampler_mi250.yaml"


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setattr(plan, "_tiny_llama", lambda: "/cache/tiny-llama")


def test_rocm_scenario_on_cpu_is_rehearsed_and_says_what_changed(tiny, monkeypatch):
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)
    rp = plan.build(scenario.load(MI250), host_platform="cpu")
    assert rp.platform == "cpu"
    subs = {(s.what, s.before, s.after) for s in rp.substitutions}
    assert ("platform", "rocm", "cpu") in subs
    assert ("model", "facebook/opt-125m", "/cache/tiny-llama") in subs
    assert ("dtype", "float16", "float32") in subs
    assert ("env VLLM_ENABLE_V1_MULTIPROCESSING", "unset", "0") in subs
    assert all(s["engine"]["model"] == "/cache/tiny-llama" for s in rp.steps)
    assert len(rp.substitutions) == len({(s.what, s.before, s.after) for s in rp.substitutions})


def test_strict_platform_refuses_a_mismatch():
    with pytest.raises(HarnessError, match="platform: scenario needs 'rocm' but this machine is 'cpu'"):
        plan.build(scenario.load(MI250), host_platform="cpu", strict_platform=True)


def test_matching_platform_changes_nothing():
    rp = plan.build(scenario.load(MI250), host_platform="rocm")
    assert rp.substitutions == [] and rp.steps[0]["engine"]["model"] == "facebook/opt-125m"


def test_model_option_replaces_every_model():
    rp = plan.build(scenario.load(MI250), host_platform="rocm", model="org/other")
    assert {s["engine"]["model"] for s in rp.steps} == {"org/other"}
    assert any(s.what == "model" and s.reason == "--model" for s in rp.substitutions)


def test_worker_plan_and_env(tiny, tmp_path):
    sc = scenario.load(MI250)
    rp = plan.build(sc, host_platform="rocm", variants=["with_fix"])
    wp = plan.worker_plan(rp, sc.variant("with_fix"), 0, events=tmp_path / "e", ledger=tmp_path / "l")
    assert [a["name"] for a in wp["profile"]["after"]][-1] == "wait_memory"
    env = plan.worker_env(rp, sc.variant("with_fix"), "tok", tmp_path / "l", base={"PYTHONPATH": "/x"})
    assert env["PYTHONPATH"].split(":") == [str(plan.HARNESS_ROOT), "/x"] and env["HARNESS_RUN_TOKEN"] == "tok"


def test_unknown_variant_is_refused():
    with pytest.raises(HarnessError, match="no variant 'nope'"):
        plan.build(scenario.load(MI250), variants=["nope"], host_platform="rocm")
