"""The simulated devices' memory ledger: lazy release, dead owners, several processes at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from harness import atomic
from harness.sim import ledger as ledger_mod
from harness.sim.ledger import ENV, GIB, Ledger, OutOfDeviceMemory
from tests.fixtures import ROOT

SMALL = {"total_gib": 16.0, "baseline_gib": 0.5, "count": 2, "release_delay_s": 0.0}


def _python(code: str, **env: str) -> subprocess.Popen:
    """A real child interpreter that can import the harness."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_configured_from_sim_device_fields(tmp_path):
    led = Ledger(tmp_path / "ledger.json", {"total_gib": 64.0, "baseline_gib": 0.5, "count": 8})
    assert led.devices() == [str(i) for i in range(8)]
    assert led.total(0) == led.total("7") == 64 * GIB
    assert led.used(3) == GIB // 2
    assert led.read([0, "1"]) == [(GIB // 2, 64 * GIB)] * 2
    with pytest.raises(ValueError, match="no simulated device '8'"):
        led.used(8)


def test_first_creator_configures_later_ones_share(tmp_path):
    path = tmp_path / "ledger.json"
    first = Ledger(path, SMALL)
    first.allocate(0, GIB, "engine")
    second = Ledger(path, {"total_gib": 99.0})  # an existing ledger keeps its devices and entries
    assert second.total(0) == 16 * GIB
    assert second.used(0) == GIB // 2 + GIB
    assert Ledger(path).used(0) == second.used(0)  # no config at all: the file has it


def test_without_config_and_file_uses_sim_device_defaults(tmp_path):
    led = Ledger(tmp_path / "sub" / "ledger.json")
    assert led.total(0) == 64 * GIB and len(led.devices()) == 8


def test_release_is_lazy_and_idempotent(tmp_path):
    led = Ledger(tmp_path / "ledger.json", SMALL)
    entry = led.allocate(0, 4 * GIB, "engine")
    assert led.used(0) == GIB // 2 + 4 * GIB
    led.release(entry, 0.6)
    assert led.used(0) == GIB // 2 + 4 * GIB, "released memory is still used until the delay is over"
    assert led.entries()[entry]["how"] == "release"
    led.release(entry, 0.0)  # a second release must not bring the memory back sooner
    assert led.used(0) == GIB // 2 + 4 * GIB
    time.sleep(0.65)
    assert led.used(0) == GIB // 2
    led.release(entry)  # already gone: nothing happens
    assert led.entries() == {}


def test_allocation_delay_is_the_default_for_release(tmp_path):
    led = Ledger(tmp_path / "ledger.json", {**SMALL, "release_delay_s": 5.0})
    a = led.allocate(0, GIB, "engine")                # the ledger's delay
    b = led.allocate(0, GIB, "engine", delay_s=0.0)   # the allocator's own delay
    before = time.time()
    led.release(a)
    led.release(b)
    entries = led.entries()
    assert a in entries and b not in entries  # b was free at once and has been pruned
    assert entries[a]["free_at"] >= before + 5.0


def test_seeded_jitter_is_reproducible(tmp_path):
    def offsets(name: str, seed: int) -> list[float]:
        led = Ledger(tmp_path / name, {**SMALL, "release_jitter_s": 2.0, "seed": seed})
        ids = [led.allocate(0, GIB, "engine") for _ in range(4)]
        out = []
        for i in ids:
            t = time.time()
            led.release(i, 1.0)
            out.append(round(led.entries()[i]["free_at"] - t, 1))
        return out

    a, b, c = offsets("a.json", 7), offsets("b.json", 7), offsets("c.json", 8)
    assert a == b
    assert a != c
    assert all(1.0 <= x <= 3.1 for x in a)


def test_allocation_larger_than_free_memory_fails_like_torch(tmp_path):
    led = Ledger(tmp_path / "ledger.json", SMALL)
    led.allocate(1, 15 * GIB, "engine")
    with pytest.raises(OutOfDeviceMemory, match=r"HIP out of memory\. Tried to allocate 1\.00 GiB\. GPU 1 has a "
                                                 r"total capacity of 16\.00 GiB of which 0\.50 GiB is free\."):
        led.allocate(1, GIB, "engine")
    assert led.used(0) == GIB // 2, "the other device is untouched"


def test_killed_owner_is_released_lazily_from_its_death(tmp_path):
    path = tmp_path / "ledger.json"
    led = Ledger(path, {**SMALL, "release_delay_s": 0.6})
    child = _python("""
        import os, time
        from harness.sim.ledger import Ledger
        entry = Ledger.from_env().allocate(1, 3 << 30, "orphan", os.getpid())
        print(entry, flush=True)
        time.sleep(60)
    """, **{ENV: str(path)})
    try:
        entry = int(child.stdout.readline())
        assert led.held_by(child.pid) == 3 * GIB
        assert led.used(1) == GIB // 2 + 3 * GIB
        os.kill(child.pid, signal.SIGKILL)
        time.sleep(0.1)  # still a zombie: not reaped yet, but dead all the same
        assert led.used(1) == GIB // 2 + 3 * GIB, "a dead process's memory comes back lazily"
        assert led.entries()[entry]["how"] == "exit"
    finally:
        child.kill()
        child.wait()
    time.sleep(0.6)
    assert led.used(1) == GIB // 2
    assert led.held_by(child.pid) == 0


def test_reused_pid_is_not_mistaken_for_the_owner():
    me = os.getpid()
    assert ledger_mod._alive(me, ledger_mod._start_time(me))
    if ledger_mod._start_time(me) is not None:  # where /proc gives start times
        assert not ledger_mod._alive(me, "1")


def test_concurrent_processes_keep_totals_exact(tmp_path):
    """Eight processes allocate and release at once while a ninth polls; nothing is lost or torn."""
    path = tmp_path / "ledger.json"
    led = Ledger(path, {**SMALL, "total_gib": 1024.0})
    writer = """
        import json, sys
        from harness.sim.ledger import Ledger
        led, me, owner = Ledger(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
        ids = [led.allocate(i % 2, (me * 100 + i + 1) << 20, "w%d" % me, owner) for i in range(25)]
        for i in ids[::3]:
            led.release(i, 0.0)
        print(json.dumps(ids))
    """
    reader = """
        import sys, time
        from harness.sim.ledger import Ledger
        led, end = Ledger(sys.argv[1]), time.time() + float(sys.argv[2])
        n = 0
        while time.time() < end:
            led.read([0, 1]); n += 1
        print(n)
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    parent = str(os.getpid())  # entries owned by this (live) process, so none is reclaimed as dead
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(writer), str(path), str(w), parent],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for w in range(8)]
    poll = subprocess.Popen([sys.executable, "-c", textwrap.dedent(reader), str(path), "2"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = [p.communicate(timeout=60) for p in procs]
    out, err = poll.communicate(timeout=60)
    assert poll.returncode == 0 and int(out) > 0, err
    all_ids = []
    kept = {0: 0, 1: 0}
    for w, ((out, err), p) in enumerate(zip(results, procs)):
        assert p.returncode == 0, err
        ids = json.loads(out)
        all_ids += ids
        for i in range(25):
            if i % 3:  # every third allocation was released
                kept[i % 2] += (w * 100 + i + 1) << 20
    assert len(set(all_ids)) == 8 * 25, "every allocation got its own id"
    assert led.used(0) == GIB // 2 + kept[0]
    assert led.used(1) == GIB // 2 + kept[1]
    assert len(led.entries()) == 8 * 16
    assert not list(tmp_path.glob("*.tmp")), "no temporary file left behind"


def test_an_interrupted_write_leaves_the_previous_state_and_no_temporary_file(tmp_path, monkeypatch):
    """Ctrl-C in the runner while it records a death in the ledger: the ledger stays whole."""
    led = Ledger(tmp_path / "ledger.json", SMALL)
    led.allocate(0, GIB, "engine")
    before = (tmp_path / "ledger.json").read_text()

    def interrupted(fd, data):
        os.write(fd, data[:20])
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic, "_write_all", interrupted)
    with pytest.raises(KeyboardInterrupt):
        led.allocate(0, GIB, "engine")
    assert (tmp_path / "ledger.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ledger.json", "ledger.json.lock"]


def test_a_killed_writers_temporary_file_is_discarded(tmp_path):
    """A worker SIGKILLed between writing and renaming leaves the hidden file; the runner removes it
    at the end of the run, and the ledger itself is untouched."""
    led = Ledger(tmp_path / "ledger.json", SMALL)
    led.allocate(1, 2 * GIB, "engine")
    partial = tmp_path / ".ledger.json.k1ll3d.tmp"  # the unique name atomic.write_bytes gave it
    partial.write_text('{"version": 1, "entr')
    led.discard_partial_write()
    assert not partial.exists()
    assert led.used(1) == 2 * GIB + GIB // 2
