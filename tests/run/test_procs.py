"""procs.py against real processes: hanging children and grandchildren, escaped orphans."""

from __future__ import annotations

import os
import sys
import time
import uuid

import psutil
import pytest

from harness.run import procs

# A child that starts a grandchild in its own process group, and both ignore nothing but hang.
HANGING_FAMILY = r"""
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print("started", flush=True)
time.sleep(600)
"""

# A child that double-forks a grandchild into a new session: it escapes the process group.
ESCAPING_GRANDCHILD = r"""
import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        block = bytearray(32 << 20); block[::4096] = b"\1" * len(block[::4096])
        open(sys.argv[1], "w").close()  # its memory is in place
        time.sleep(600)
    os._exit(0)
os.wait()
print("forked", flush=True)
"""


def _env(token: str) -> dict[str, str]:
    return {**os.environ, procs.TOKEN_ENV: token}


def _family(token: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter():
        try:
            if p.environ().get(procs.TOKEN_ENV) == token:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return found


def _wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_stop_kills_the_whole_group_including_grandchildren(tmp_path):
    token = uuid.uuid4().hex
    log = open(tmp_path / "log", "wb")
    proc = procs.spawn([sys.executable, "-c", HANGING_FAMILY], env=_env(token), output=log)
    assert _wait_for(lambda: len(_family(token)) == 2)
    start = time.monotonic()
    procs.stop(proc, grace=2.0)
    assert time.monotonic() - start < 5
    assert _wait_for(lambda: not _family(token), timeout=5)
    assert proc.returncode is not None


def test_stop_escalates_to_sigkill_when_sigterm_is_ignored(tmp_path):
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(600)"
    log = open(tmp_path / "log", "wb")
    proc = procs.spawn([sys.executable, "-c", code], env=dict(os.environ), output=log)
    assert _wait_for(lambda: b"ready" in (tmp_path / "log").read_bytes())
    procs.stop(proc, grace=0.5)
    assert proc.returncode == -9
    assert procs.exit_description(proc.returncode) == "killed by SIGKILL"


def test_sweep_finds_and_kills_an_escaped_grandchild(tmp_path):
    token = uuid.uuid4().hex
    ready = tmp_path / "ready"
    done = procs.run([sys.executable, "-c", ESCAPING_GRANDCHILD, str(ready)], timeout=30, env=_env(token))
    assert done and "forked" in done.output
    assert _wait_for(lambda: len(_family(token)) == 1)  # the parent is gone, the grandchild lives on
    assert _wait_for(ready.exists)
    (escaped,) = _family(token)
    rss = escaped.memory_info().rss
    found = procs.sweep(token, grace=2.0, describe=lambda pid: {"device_bytes": 123})
    assert len(found) == 1
    # the sweep names the process and reports what it held (not how big a grandchild is here)
    assert found[0]["pid"] == escaped.pid and "os.fork()" in found[0]["cmdline"]
    assert found[0]["rss_bytes"] == pytest.approx(rss, rel=0.25) and found[0]["device_bytes"] == 123
    assert _wait_for(lambda: not _family(token), timeout=5)


def test_run_times_out_and_leaves_nothing_behind():
    token = uuid.uuid4().hex
    start = time.monotonic()
    done = procs.run([sys.executable, "-c", HANGING_FAMILY], timeout=1.0, env=_env(token), grace=1.0)
    assert done.timed_out and not done
    assert time.monotonic() - start < 6
    assert _wait_for(lambda: not _family(token), timeout=5)
