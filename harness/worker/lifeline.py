"""The worker stops when the runner is gone, vLLM's processes with it (standard library only).

A runner killed with ``kill -9`` cannot stop its worker, and a worker left running holds the device
for the next CI job. So the worker watches its runner two ways:

* a pipe (the lifeline): the runner holds its write end (run/procs.py) and the worker blocks on the
  read end in a thread; when the runner dies, the kernel closes the write end and the read returns
  end-of-file. This works through a wrapper script between the two, and on any POSIX system;
* on Linux also ``PR_SET_PDEATHSIG``: the kernel sends the worker SIGUSR2 when its parent dies, so a
  worker whose watcher thread cannot run (a C call holding the GIL) still hears of it.

Either way the worker stops its whole process group (SIGTERM, then SIGKILL after a grace period),
and every process that carries the run's token (vLLM's processes that left the group), then exits.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

ENV = "HARNESS_LIFELINE_FD"  # the read end's descriptor number, set by procs.spawn
TOKEN_ENV = "HARNESS_RUN_TOKEN"  # as run/procs.py
PARENT_DEATH_SIGNAL = signal.SIGUSR2
PR_SET_PDEATHSIG = 1
GRACE_S = 5.0
EXIT_ORPHANED = 75  # nobody reads it: the runner is gone

_lock = threading.Lock()


def watch(grace: float = GRACE_S) -> None:
    """Start watching the runner, when it gave a lifeline: from now on its death stops this process
    and its group. (A worker started by hand, or called in-process by a test, is left alone.)"""
    parent = os.getppid()
    fd = os.environ.pop(ENV, None)  # popped: vLLM's processes must not think they are watched
    if fd is None or not fd.isdigit():
        return
    signal.signal(PARENT_DEATH_SIGNAL, lambda signum, frame: stop(grace))
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, int(PARENT_DEATH_SIGNAL), 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the pipe still watches
    os.set_inheritable(int(fd), False)
    threading.Thread(target=_read_until_closed, args=(int(fd), grace), name="lifeline", daemon=True).start()
    if os.getppid() != parent:  # the parent died before the death signal was armed
        stop(grace)


def _read_until_closed(fd: int, grace: float) -> None:
    while True:
        try:
            if not os.read(fd, 4096):
                break  # end of file: every write end is closed, the runner is gone
        except InterruptedError:
            continue
        except OSError:
            break
    stop(grace)


def stop(grace: float = GRACE_S) -> None:
    """Stop every other process of this group and of this run, then exit."""
    if not _lock.acquire(blocking=False):
        return  # the other watcher is at it already
    me = os.getpid()
    try:
        print("worker: the runner is gone; stopping this worker and its processes", file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass
    members = _members(me)
    if members is None:  # no /proc: the group, this process included, at once
        os.killpg(os.getpgrp(), signal.SIGKILL)
    _signal(members, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _members(me):
        time.sleep(0.05)
    _signal(_members(me) or set(), signal.SIGKILL)  # again: what started during the grace too
    os._exit(EXIT_ORPHANED)


def _signal(pids, sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _members(me: int) -> set[int] | None:
    """Live processes (not zombies) of this process group or carrying this run's token, but this
    one; None where /proc cannot say."""
    group, token = os.getpgrp(), os.environ.get(TOKEN_ENV)
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return None
    out = set()
    for pid in pids:
        if pid == me:
            continue
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            if fields[0] == b"Z":
                continue
            if int(fields[2]) == group or (token and _has_token(pid, token)):
                out.add(pid)
        except (OSError, IndexError, ValueError):
            continue
    return out


def _has_token(pid: int, token: str) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f"{TOKEN_ENV}={token}".encode() in f.read().split(b"\0")
    except OSError:
        return False
