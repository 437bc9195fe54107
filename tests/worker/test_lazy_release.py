"""The CUDA lazy-release injection (faults.LazyRelease) driven by the real worker, with a helper
that holds "memory" in a file instead of on a GPU, and a fake engine whose memory a probe reads.

What it pins down: with the memory held again after the engine gave it back, the release latency
of a teardown that waits counts until the helper really gives it back (not until the moment the
engine freed it, which the hold undoes), and `release_after_free_s` says how late the wait noticed.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.worker import faults
from harness.worker import steps as worker_steps, stream as worker_stream
from tests.fixtures import GIB

TOTAL, BASE, ENGINE = 80 * GIB, 1 * GIB, 70 * GIB
HOLD_S = 0.6

FAKE_HELPER = r"""
import os, sys, threading, time
path = os.environ["FAKE_HOLD_FILE"]
lock = threading.Lock()

def say(text):
    with lock:
        print(text, flush=True)

file_lock = threading.Lock()  # two releases may write at the same moment

def put(n):
    with file_lock:
        with open(path + ".tmp", "w") as f:
            f.write(str(n))
        os.replace(path + ".tmp", path)

def release(device, seconds):
    time.sleep(seconds)
    put(0)
    say(f"freed {device} {time.time()!r}")

say("ready")
for line in sys.stdin:
    nbytes, device, seconds = line.split()
    put(int(nbytes))
    say("held")
    threading.Thread(target=release, args=(device, float(seconds)), daemon=True).start()
"""


class FakeDevice:
    """Used memory = baseline + a live engine + whatever the helper holds (its file)."""

    name = "fake"

    def __init__(self, hold_file: Path):
        self.hold_file = hold_file
        self.engine_alive = False

    def read(self, devices):
        held = int(self.hold_file.read_text() or 0) if self.hold_file.exists() else 0
        used = BASE + (ENGINE if self.engine_alive else 0) + held
        return [(used, TOTAL) for _ in devices]

    def device_name(self, device):
        return "fake"


class FakeBackend:
    def __init__(self, device: FakeDevice):
        self.device = device

    def probe(self):
        return self.device

    def engine_process(self):
        return "in-process"

    def construct(self, engine_args):
        self.device.engine_alive = True
        core = SimpleNamespace(shutdown=lambda: setattr(self.device, "engine_alive", False))
        return SimpleNamespace(llm_engine=SimpleNamespace(engine_core=core))

    def cleanup_dist_env(self):
        pass

    def empty_cache(self):
        pass


@pytest.fixture
def hold_file(tmp_path, monkeypatch):
    path = tmp_path / "held"
    monkeypatch.setenv("FAKE_HOLD_FILE", str(path))
    monkeypatch.setattr(faults, "_HOLDER_CODE", FAKE_HELPER)
    return path


def run_step(tmp_path, hold_file, after: list[str]) -> dict:
    events_path = tmp_path / "events.jsonl"
    plan = {"backend": "vllm", "platform": "cuda", "devices": [0], "repeat": 0, "inject": {"lazy_release": {"seconds": HOLD_S}},
            "profile": {"name": "p", "before": [], "after": [{"name": n, "params": {}} for n in after]}}
    events = worker_stream.Events(str(events_path), "v", 0)
    runner = worker_steps.StepRunner(plan, events, FakeBackend(FakeDevice(hold_file)))
    try:
        runner.run({"name": "s", "index": 0, "engine": {"gpu_memory_utilization": 0.9}, "workload": None,
                    "expect": {}, "timeout_s": 60})
    finally:
        runner.lazy.close()
    lines = [json.loads(line) for line in events_path.read_text().splitlines()]
    return {"end": next(e for e in lines if e["event"] == "step_end"),
            "memory": {e["label"]: e["used_bytes"] for e in lines if e["event"] == "memory"}}


def test_waiting_teardown_counts_until_the_helper_gives_the_memory_back(tmp_path, hold_file):
    out = run_step(tmp_path, hold_file, ["engine_core_shutdown", "del_llm", "wait_memory"])
    end, memory = out["end"], out["memory"]
    assert end["outcome"] == "passed", end
    # freed by the shutdown, taken again by the helper, back after the wait
    assert memory["after_engine_core_shutdown"] == BASE
    assert memory["after_lazy_release"] == BASE + ENGINE
    assert memory["after_wait_memory"] == BASE
    assert end["release_latency_s"] >= HOLD_S, "the latency must not stop at the shutdown's short-lived release"
    assert -0.05 < end["release_after_free_s"] < 0.5


def test_teardown_without_a_wait_never_sees_the_memory_back(tmp_path, hold_file):
    out = run_step(tmp_path, hold_file, ["del_llm", "engine_core_shutdown"])
    assert out["memory"]["after_lazy_release"] == BASE + ENGINE
    assert out["end"]["release_latency_s"] is None
    assert "release_after_free_s" not in out["end"]


def test_helper_holds_overlap_and_report_each_release(hold_file):
    lazy = faults.LazyRelease(0.3)
    try:
        lazy.start()
        t0 = time.time()
        lazy.hold(0, 123)
        assert hold_file.read_text() == "123"
        lazy.hold(1, 456)  # does not wait for the first hold to end
        assert time.time() - t0 < 0.3
        assert lazy.freed_after(1, timeout=5.0) is not None
        assert lazy.releases == 2
        assert lazy.freed_at >= t0 + 0.3
    finally:
        lazy.close()


def test_a_helper_that_dies_is_an_error_not_a_hang(monkeypatch):
    monkeypatch.setattr(faults, "_HOLDER_CODE", "import sys; sys.exit(1)")
    lazy = faults.LazyRelease(1.0)
    try:
        with pytest.raises(RuntimeError, match="failed to take the memory"):
            lazy.hold(0, 1)
    finally:
        lazy.close()


def test_nothing_to_hold_starts_nothing():
    lazy = faults.LazyRelease(1.0, argv=[sys.executable, "-c", "raise SystemExit(3)"])
    lazy.hold(0, 0)
    assert lazy._proc is None
    lazy.close()
