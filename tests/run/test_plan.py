"""Planning: rehearsal substitutions on a machine without the scenario's platform."""

from __future__ import annotations

import dataclasses

import pytest

from harness.run import plan
from harness.scenario import schema as scenario
from harness.errors import HarnessError
from tests.fixtures import ROOT

MI250 = ROOT / "scenarios/sampler_mi250.yaml"


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setattr(plan, "_tiny_llama", lambda: "/cache/tiny-llama")


def test_rocm_scenario_on_cpu_is_rehearsed_and_says_what_changed(tiny, monkeypatch):
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)
    rp = plan.build(dataclasses.replace(scenario.load(MI250), rehearsal_engine_process="child"), host_platform="cpu")
    assert rp.platform == "cpu"
    subs = {(s.what, s.before, s.after) for s in rp.substitutions}
    assert ("platform", "rocm", "cpu") in subs
    assert ("model", "facebook/opt-125m", "/cache/tiny-llama") in subs
    assert ("dtype", "float16", "float32") in subs
    # engines keep vLLM's default (an EngineCore child process), as on the GPU node
    assert not any("VLLM_ENABLE_V1_MULTIPROCESSING" in s.what for s in rp.substitutions)
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in rp.engine_env
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


# ----------------------------------------------------------------------------- tensor parallel on CPU
CPU_TP2 = ROOT / "scenarios/cpu_tp2.yaml"
H200X2 = ROOT / "scenarios/h200x2_tp2.yaml"


@pytest.fixture
def two_cores(monkeypatch):
    monkeypatch.setattr(plan, "_cpu_cores", lambda: [0, 1])
    monkeypatch.delenv(plan.CPU_BIND_ENV, raising=False)


def test_cpu_tp2_keeps_its_ranks_one_core_each(tiny, two_cores):
    rp = plan.build(scenario.load(CPU_TP2), host_platform="cpu")
    assert {(s["engine"]["tensor_parallel_size"], s["engine"]["distributed_executor_backend"]) for s in rp.steps} \
        == {(2, "mp")}
    assert rp.engine_env[plan.CPU_BIND_ENV] == "0|1"
    assert ("env VLLM_CPU_OMP_THREADS_BIND", "unset", "0|1") in {(s.what, s.before, s.after) for s in rp.substitutions}


def test_a_tp2_gpu_scenario_is_rehearsed_with_two_ranks_on_cpu(tiny, two_cores):
    # its variants with and without a lazy release are two devices on the modelled device: one at a time
    with pytest.raises(HarnessError, match="variants.bare_lazy.inject.device_model.release_delay_s: 30 in "
                                           "variant 'bare_lazy', 0 in variant 'bare'"):
        plan.build(scenario.load(H200X2), host_platform="cpu")
    rp = plan.build(scenario.load(H200X2), host_platform="cpu", variants=["legacy_lazy", "fixed_lazy"])
    engine = rp.steps[0]["engine"]
    assert engine["tensor_parallel_size"] == 2 and engine["distributed_executor_backend"] == "mp"
    assert engine["model"] == "/cache/tiny-llama" and rp.engine_env[plan.CPU_BIND_ENV] == "0|1"
    subs = {(s.what, s.before, s.after) for s in rp.substitutions}
    assert ("distributed_executor_backend", "(default)", "mp") in subs and ("dtype", "bfloat16", "float32") in subs
    assert not any(s.what == "tensor_parallel_size" for s in rp.substitutions)


def test_more_ranks_than_cores_become_one_rank_and_say_so(tiny, monkeypatch):
    monkeypatch.setattr(plan, "_cpu_cores", lambda: [3])
    rp = plan.build(scenario.load(CPU_TP2), host_platform="cpu")
    assert {(s["engine"]["tensor_parallel_size"], s["engine"]["distributed_executor_backend"]) for s in rp.steps} \
        == {(1, "uni")}
    assert ("tensor_parallel_size", "2", "1") in {(s.what, s.before, s.after) for s in rp.substitutions}
    assert plan.CPU_BIND_ENV not in rp.engine_env


def test_the_callers_core_binding_is_left_alone(tiny, two_cores, monkeypatch):
    monkeypatch.setenv(plan.CPU_BIND_ENV, "1|0")
    rp = plan.build(scenario.load(CPU_TP2), host_platform="cpu")
    assert plan.CPU_BIND_ENV not in rp.engine_env


def test_one_rank_on_cpu_stays_in_process(tiny, two_cores):
    rp = plan.build(scenario.load(MI250), host_platform="cpu")
    assert {s["engine"]["distributed_executor_backend"] for s in rp.steps} == {"uni"}
    assert plan.CPU_BIND_ENV not in rp.engine_env


def test_a_scenario_may_rehearse_with_in_process_engines_and_says_so(tiny, monkeypatch, tmp_path):
    """sampler_mi250.yaml asks for `rehearsal: {engine_process: in-process}`: only a rehearsal gets
    VLLM_ENABLE_V1_MULTIPROCESSING=0, as a substitution; the caller's and a variant's env still win."""
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)
    sc = scenario.load(MI250)
    assert sc.rehearsal_engine_process == "in-process"
    rp = plan.build(sc, host_platform="cpu")
    assert rp.engine_env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    assert ("env VLLM_ENABLE_V1_MULTIPROCESSING", "unset", "0") in {(s.what, s.before, s.after) for s in rp.substitutions}
    variant = dataclasses.replace(sc.variants[0], env={"VLLM_ENABLE_V1_MULTIPROCESSING": "1"})
    env = plan.worker_env(rp, variant, "token", tmp_path / "ledger", base={})
    assert env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "1"
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in plan.build(sc, host_platform="rocm").engine_env  # a real node
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in plan.build(sc, host_platform="cpu").engine_env


def test_rehearsal_engine_process_is_checked(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(MI250.read_text().replace("engine_process: in-process", "engine_process: inprocess"))
    with pytest.raises(HarnessError) as e:
        scenario.load(bad)
    assert "rehearsal.engine_process" in str(e.value) and "did you mean 'in-process'" in str(e.value)
