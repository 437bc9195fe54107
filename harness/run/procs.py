"""The one owner of child processes.

Every child gets an argument list (never a shell), its own session (so its whole process group,
vLLM's EngineCore and workers included, can be signalled at once), and is stopped by SIGTERM to the
group, then SIGKILL after a grace period. A run token in the environment finds the descendants that
escaped the group (double-forked, setsid), so nothing the run started outlives it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import IO, Callable, Sequence

import psutil

from harness.worker.lifeline import ENV as LIFELINE_ENV
from harness.worker.lifeline import TOKEN_ENV


def spawn(argv: Sequence[str], *, env: dict[str, str], cwd: str | None = None,
          output: IO | None = None, lifeline: bool = False) -> subprocess.Popen:
    """Start a child in its own session; stdout and stderr both go to `output` (a log file).

    With `lifeline`, the child gets the read end of a pipe whose write end only this process holds
    (run/lifeline.py): should this process die, even by SIGKILL, the child sees end-of-file and
    stops itself and its group. `stop` closes the write end once the child is stopped."""
    read_end = write_end = None
    if lifeline:
        read_end, write_end = os.pipe()  # not inheritable: no other child gets the write end
        env = {**env, LIFELINE_ENV: str(read_end)}
    try:
        proc = subprocess.Popen(list(argv), env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                stdout=output or subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                start_new_session=True, pass_fds=(read_end,) if lifeline else ())
    except BaseException:
        if lifeline:
            os.close(write_end)
        raise
    finally:
        if lifeline:
            os.close(read_end)
    proc.lifeline = write_end
    return proc


def _signal_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _group_alive(pgid: int) -> bool:
    """Whether a member of the group still runs. kill(0) succeeds for zombies too, and an init that
    does not reap (PID 1 of some containers) keeps those for ever: they hold nothing, so they do not
    count, or every stop would wait out its whole grace period."""
    if not _signal_group(pgid, 0):
        return False
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                return True
        except (OSError, psutil.Error):  # gone meanwhile, or not ours to look at
            continue
    return False


def stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the child's whole process group, SIGKILL what is left after `grace` seconds.

    Members of the group can outlive the leader (an EngineCore whose parent died), so we wait for
    the group, not only for the leader."""
    pgid = proc.pid
    if _signal_group(pgid, signal.SIGTERM):
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            proc.poll()
            if not _group_alive(pgid):
                break
            time.sleep(0.05)
        _signal_group(pgid, signal.SIGKILL)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:  # unkillable (D state): leave it to the sweep
        pass
    lifeline, proc.lifeline = getattr(proc, "lifeline", None), None
    if lifeline is not None:  # only now: the child must not take a stop for its runner's death
        os.close(lifeline)


@dataclass
class Completed:
    returncode: int | None
    output: str
    timed_out: bool

    def __bool__(self) -> bool:
        return self.returncode == 0 and not self.timed_out


def run(argv: Sequence[str], *, timeout: float, env: dict[str, str] | None = None,
        cwd: str | None = None, grace: float = 5.0) -> Completed:
    """Run a short command (pip, git, a build) to completion with a wall-clock timeout.

    Output goes to a temporary file, not a pipe: a grandchild that inherits a pipe and outlives
    the command would keep us waiting for an end-of-file that never comes."""
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(list(argv), env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            stop(proc, grace)
        except BaseException:  # Ctrl-C: never leave the child behind
            stop(proc, grace)
            raise
        out.seek(0)
        return Completed(proc.returncode, out.read().decode("utf-8", errors="replace"), timed_out)


def exit_description(returncode: int | None) -> str:
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


def sweep(token: str, grace: float = 5.0, describe: Callable[[int], dict] | None = None) -> list[dict]:
    """Find every live process carrying this run token, describe it (with `describe(pid)`, e.g. the
    device memory it holds), and kill it."""
    me = os.getpid()
    found: list[psutil.Process] = []
    info: list[dict] = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.pid == me:
            continue
        try:
            if proc.environ().get(TOKEN_ENV) != token:
                continue
            info.append({"pid": proc.pid, "cmdline": " ".join(proc.info["cmdline"] or [])[:300],
                         "rss_bytes": proc.memory_info().rss, **(describe(proc.pid) if describe else {})})
            found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    for proc in found:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    alive = _wait_gone(found, grace)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    _wait_gone(alive, grace)
    return info


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _wait_gone(found: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until none of `found` runs; the ones still running after `timeout`. An escaped process
    is not our child: once dead it is a zombie until init reaps it (psutil.wait_procs would wait for
    that, and some containers' init never does)."""
    deadline = time.monotonic() + timeout
    alive = [p for p in found if _running(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if _running(p)]
    return alive
