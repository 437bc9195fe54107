"""Injected faults (a variant's `inject:`), called by the worker at fixed points of each step.

- hang / crash / orphan: make the harness's own reliability testable with real processes;
- lazy_release (a slow release): on a GPU that frees memory at once (CUDA), a helper process takes
  the memory the engine just gave back and keeps it for S seconds — what ROCm's lazy reclaim does to
  the next test. (On the simulated device the ledger's release delay does this instead.) With
  `step:` only the engine built in that step is released slowly.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from harness.device import LEDGER_ENV


# Where the worker is: (step, repeat) of the latest `at` call. The simulated backend reads it at
# construction, because `construct(engine_args)` is vLLM's signature and knows no step.
_where: tuple[str, int] | None = None


class EngineDeadError(RuntimeError):
    """An engine process died under the step (vLLM's frontend raises an error of this name)."""


def _matches(spec: dict, step: str, phase: str, repeat: int) -> bool:
    return (spec.get("step") == step and spec.get("phase", "construct") == phase
            and spec.get("repeat", repeat) == repeat)


def at(inject: dict[str, Any], step: str, phase: str, repeat: int) -> None:
    """Fire whatever the variant injects at this step and phase."""
    global _where
    _where = (step, repeat)
    hang = inject.get("hang")
    if hang and _matches(hang, step, phase, repeat):
        print(f"[inject] hanging in {step}/{phase}", flush=True)
        while True:  # an engine that never answers
            time.sleep(3600)
    crash = inject.get("crash")
    if crash and _matches(crash, step, phase, repeat):
        _crash(crash)
    orphan = inject.get("orphan")
    if orphan and orphan.get("step") == step and phase == "construct":
        spawn_orphan(int(orphan.get("hold_mib", 64)))


def slow_release_s(inject: dict[str, Any], step: str | None = None, repeat: int | None = None) -> float:
    """Seconds of injected slow release (`lazy_release`) for the engine built in `step` (default:
    the step the worker is in): every step's without `step:` in the spec, else only that one's."""
    spec = inject.get("lazy_release")
    if not spec:
        return 0.0
    if "step" in spec:
        if step is None:
            if _where is None:
                return 0.0
            step, repeat = _where
        if spec["step"] != step or spec.get("repeat", repeat) != repeat:
            return 0.0
    return float(spec.get("seconds") or 0.0)


def _crash(spec: dict) -> None:
    sig = getattr(signal, spec.get("signal", "SIGKILL"))
    print(f"[inject] {spec.get('target', 'worker')} gets {sig.name}", flush=True)
    if spec.get("target") == "engine":
        try:
            import psutil

            children = [c for c in psutil.Process().children() if not _helper(c)]
        except ImportError:
            children = []
        if children:
            _kill_engine(children, sig)
        # An in-process engine (the simulated one, or vLLM without multiprocessing) takes the
        # worker down with it, as a real one would.
    os.kill(os.getpid(), sig)


def _helper(proc) -> bool:
    """Children of the worker that are not the engine: multiprocessing's resource tracker (vLLM
    starts one) and the lazy-release helper. Killing those would only add noise to the log."""
    try:
        cmdline = " ".join(proc.cmdline())
    except Exception:  # gone meanwhile
        return True
    return "multiprocessing.resource_tracker" in cmdline or _HOLDER_CODE in cmdline


def _kill_engine(children: list, sig: signal.Signals) -> None:
    """Kill the worker's child processes (vLLM's EngineCore) and fail the step as vLLM's frontend
    does when its EngineCore dies: the worker lives on, the step gets an EngineDeadError. Unlike
    vLLM's, the message names the signal, which the step's `crash` must show."""
    import psutil

    for child in children:
        try:
            os.kill(child.pid, sig)
        except ProcessLookupError:
            pass
    dead = []
    for child in children:
        try:
            code = child.wait(timeout=10)
        except psutil.TimeoutExpired:  # the signal was ignored (SIGTERM): the engine is stuck, not dead
            dead.append(f"pid {child.pid} still running after {sig.name}")
            continue
        except psutil.NoSuchProcess:
            code = None
        if code is None:  # reaped first by its Process object (vLLM's): gone after our signal
            dead.append(f"pid {child.pid} killed by {sig.name}")
        elif code < 0:
            dead.append(f"pid {child.pid} killed by {signal.Signals(-code).name}")
        else:
            dead.append(f"pid {child.pid} exit code {code}")
    raise EngineDeadError(f"engine process died unexpectedly: {', '.join(dead)}")


def spawn_orphan(hold_mib: int) -> None:
    """Double-fork a grandchild in a new session (it escapes the worker's process group, as a
    leaked engine process can) that holds memory until something kills it."""
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)
        return
    os.setsid()
    if os.fork():
        os._exit(0)
    try:
        block = bytearray(hold_mib << 20)
        block[::4096] = b"\x01" * len(block[::4096])  # touch the pages so they count as resident
        ledger = os.environ.get(LEDGER_ENV)
        if ledger:
            from harness.sim.ledger import Ledger

            Ledger(ledger).allocate(0, hold_mib << 20, "orphan", os.getpid())
        time.sleep(3600)  # last-resort bound; the harness's sweep kills it long before
    finally:
        os._exit(0)


_HOLDER_CODE = r"""
import ctypes, signal, sys, threading, time
try:
    ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the worker
except OSError:
    pass
import torch
lock = threading.Lock()

def say(text):
    with lock:
        print(text, flush=True)

def release(block, device, seconds):
    time.sleep(seconds)
    block.pop()
    torch.cuda.set_device(device)
    torch.cuda.empty_cache()
    torch.cuda.synchronize()
    say(f"freed {device} {time.time()!r}")  # the memory is back from here on

say("ready")
for line in sys.stdin:
    nbytes, device, seconds = line.split()
    device = int(device)
    torch.cuda.set_device(device)
    block = [torch.empty(int(nbytes), dtype=torch.uint8, device="cuda")]
    torch.cuda.synchronize()
    say("held")
    threading.Thread(target=release, args=(block, device, float(seconds)), daemon=True).start()
"""

HELPER_TIMEOUT_S = 300.0  # starting the helper imports torch and creates a CUDA context


class LazyRelease:
    """Keeps a helper process (torch + a CUDA context) that holds freed memory for a while.

    The worker blocks until the helper reports the memory taken, so the next construction can
    never slip in between the release and the hold. The helper is in the worker's process group,
    dies with the worker (PR_SET_PDEATHSIG) and frees each block after `seconds` on its own, in a
    thread of its own (so holds on several devices, or overlapping ones, each last `seconds`).
    When it has given a block back it says so: `freed_at` is the wall-clock time (time.time()) of
    the latest release, which tells how long after the memory was really free a teardown's wait
    noticed it.
    """

    def __init__(self, seconds: float, argv: list[str] | None = None):
        self.seconds = seconds
        self._argv = argv or [sys.executable, "-c", _HOLDER_CODE]
        self._proc: subprocess.Popen | None = None
        self._replies: queue.Queue[str] = queue.Queue()
        self._lock = threading.Lock()
        self.freed_at: float | None = None  # wall-clock time of the helper's latest release
        self.releases = 0  # how many blocks the helper has given back

    def start(self) -> None:
        """Start the helper ahead of the first hold (importing torch takes seconds); idempotent."""
        if self._proc is None or self._proc.poll() is not None:
            self._replies = queue.Queue()
            self._proc = subprocess.Popen(self._argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            threading.Thread(target=self._read, args=(self._proc, self._replies), daemon=True).start()

    def _read(self, proc: subprocess.Popen, replies: queue.Queue) -> None:
        for line in proc.stdout:
            line = line.strip()
            if line.startswith("freed "):
                with self._lock:
                    self.freed_at = float(line.split()[2])
                    self.releases += 1
            elif line:
                replies.put(line)
        replies.put("")  # the helper is gone

    def _reply(self, timeout: float) -> str:
        while True:
            try:
                line = self._replies.get(timeout=timeout)
            except queue.Empty:
                return ""
            if line != "ready":
                return line

    def hold(self, device: int, nbytes: int) -> None:
        if nbytes <= 0:
            return
        self.start()
        self._proc.stdin.write(f"{nbytes} {device} {self.seconds}\n")
        self._proc.stdin.flush()
        if self._reply(HELPER_TIMEOUT_S) != "held":
            raise RuntimeError("lazy-release helper failed to take the memory")

    def freed_after(self, releases: int, timeout: float = 0.0) -> float | None:
        """`freed_at` once the helper has made more than `releases` releases (waiting up to
        `timeout` s for its report, which follows the release by milliseconds); else None."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if self.releases > releases:
                    return self.freed_at
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.01)

    def close(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
