"""The modelled device under the real vLLM-CPU engine, with the engine in vLLM's EngineCore child
process (vLLM's default): whose charge it is, and when a shut-down or killed child's memory comes
back. On vLLM-CPU the EngineCore runs the model in a worker process of its own (vLLM-CPU forces its
multiprocessing executor): the charges are that process's, a grandchild of the harness's worker.
"""

from __future__ import annotations

import json

import pytest

from harness.sim.ledger import GIB
from tests.fixtures import VLLM_CPU_HEAD as HEAD
from tests.fixtures import case_props as _props, failure_type as _failure, junit_cases as _cases, run_scenario as _run

pytestmark = pytest.mark.vllm

CLAIM = 0.9 * 16 * GIB  # gpu_memory_utilization x total_gib of the device below

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
# vLLM-CPU's model worker outlives the executor's grace period at every shutdown and is SIGTERMed:
# 1 s instead of vLLM's 5 s reaches that same SIGTERM sooner
CHILD_ENV = '{HOLDER_VARIANT: NAME, VLLM_CPU_KVCACHE_SPACE: "1", VLLM_WORKER_SHUTDOWN_TIMEOUT_SECONDS: "1"}'
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
