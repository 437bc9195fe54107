"""The simulated devices' memory: one JSON file shared by every process of a run.

The worker, its engine, an injected orphan grandchild and the runner all see the same devices, so
the ledger lives in a file, not in a process:

- every change is a read-modify-write under an exclusive `fcntl.flock` on a sidecar lock file, and
  the new state is written to a temporary name and `os.replace`d over the ledger;
- reads take no lock at all: `os.replace` is atomic, so a reader always opens one complete state.
  A read is one small file and a liveness check per owning process (`kill(pid, 0)` and its /proc
  stat line): some 50 microseconds, cheap enough for 50 ms polling.

Memory is given back the way ROCm gives it back: lazily. A released entry still counts as used until
`released + delay` (the entry's delay, plus a seeded random jitter). An entry whose process has died
is treated as released at the moment the death was first observed (by any reader or writer), so a
killed engine's memory also comes back only after the delay.

State (version 1)::

    {"version": 1, "release_delay_s": 2.0, "release_jitter_s": 0.0, "seed": 0, "next_id": 3,
     "devices": {"0": {"total": 68719476736, "baseline": 536870912}, ...},
     "entries": {"1": {"device": "0", "nbytes": ..., "owner": "engine", "pid": 4242,
                       "pid_start": "123456", "delay_s": 2.0, "allocated_at": ...,
                       "free_at": null | epoch seconds, "how": null | "release" | "exit"}}}
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

from harness import atomic
from harness.device import GIB, LEDGER_ENV, RunnerHooks
from harness.sim.device import DEFAULTS

ENV = LEDGER_ENV
VERSION = 1


class OutOfDeviceMemory(RuntimeError):
    """An allocation larger than the device's free memory; worded like torch's on ROCm."""


class Ledger:
    """Memory per simulated device, shared through the file at `path`.

    `config` (SimDevice fields as a dict) initialises the ledger when the file does not exist yet;
    an existing ledger keeps its configuration and entries (the first process of a run creates it).
    Devices are named by their physical id as a string ("0", "1", ...); ints are accepted.
    """

    def __init__(self, path: str | os.PathLike, config: dict[str, Any] | None = None):
        self.path = Path(path)
        self._lock_path = Path(f"{self.path}.lock")
        if not self.path.exists():
            self._initialise({**DEFAULTS, **(config or {})})

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Ledger | None:
        """The run's ledger named by $HARNESS_SIM_LEDGER (harness.device.LEDGER_ENV), or None outside a sim run."""
        path = (os.environ if env is None else env).get(ENV)
        return cls(path) if path else None

    # ------------------------------------------------------------------ reads (lock-free)
    def used(self, device: int | str) -> int:
        """Baseline + held + released-but-not-yet-free bytes."""
        return self.read([device])[0][0]

    def total(self, device: int | str) -> int:
        return self._device(self._state(), device)["total"]

    def free(self, device: int | str) -> int:
        used, total = self.read([device])[0]
        return total - used

    def read(self, devices: Sequence[int | str]) -> list[tuple[int, int]]:
        """(used, total) per device from one consistent snapshot."""
        state, now = self._state(), time.time()
        totals = [self._device(state, d)["total"] for d in devices]  # names an unknown device
        return [(_used(state, _key(d), now), total) for d, total in zip(devices, totals)]

    def pending(self, devices: Sequence[int | str]) -> list[int]:
        """Bytes per device that were released but are not free yet (they will come back by waiting)."""
        state, now = self._state(), time.time()
        return [sum(e["nbytes"] for e in state["entries"].values()
                    if e["device"] == _key(d) and e["free_at"] is not None and e["free_at"] > now) for d in devices]

    def held_by(self, pid: int) -> int:
        """Bytes still counted against the devices (held or pending release) for `pid`'s entries."""
        state, now = self._state(), time.time()
        return sum(e["nbytes"] for e in state["entries"].values() if e["pid"] == pid and _counts(e, now))

    def entries(self) -> dict[int, dict[str, Any]]:
        """Every entry still counted or pending, by id (for reports and tests)."""
        return {int(k): dict(v) for k, v in self._state()["entries"].items()}

    def devices(self) -> list[str]:
        return _names(self._state())

    # ------------------------------------------------------------------ changes (under the lock)
    def allocate(self, device: int | str, nbytes: int, owner: str, pid: int | None = None, *,
                 delay_s: float | None = None) -> int:
        """Take `nbytes` on `device` for process `pid` (default: this one); returns the entry id.

        `delay_s` is how long the memory stays counted after it is released or its process dies
        (default: the ledger's release_delay_s). Raises OutOfDeviceMemory if it does not fit.
        """
        pid = os.getpid() if pid is None else int(pid)
        with self._changing() as (state, now):
            key = _key(device)
            dev = self._device(state, key)
            free = dev["total"] - _used(state, key, now)
            if nbytes > free:
                raise OutOfDeviceMemory(
                    f"HIP out of memory. Tried to allocate {nbytes / GIB:.2f} GiB. GPU {key} has a total "
                    f"capacity of {dev['total'] / GIB:.2f} GiB of which {max(free, 0) / GIB:.2f} GiB is free.")
            entry_id = state["next_id"]
            state["next_id"] = entry_id + 1
            state["entries"][str(entry_id)] = {
                "device": key, "nbytes": int(nbytes), "owner": owner, "pid": pid, "pid_start": _start_time(pid),
                "delay_s": float(state["release_delay_s"] if delay_s is None else delay_s),
                "allocated_at": now, "free_at": None, "how": None}
        return entry_id

    def release(self, entry_id: int, delay_s: float | None = None, *, at: float | None = None) -> None:
        """Give an entry back; it becomes free at `at` (default: now) + delay (+ jitter). `at` is
        when the memory was really given back, for a writer that records it later. Idempotent:
        releasing an entry twice, or one already gone, changes nothing."""
        with self._changing() as (state, now):
            entry = state["entries"].get(str(entry_id))
            if entry is not None and entry["free_at"] is None:
                _schedule_free(state, entry_id, entry, now if at is None else min(at, now), "release", delay_s)

    # ------------------------------------------------------------------ internals
    def _initialise(self, config: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked():
            if self.path.exists():  # another process created it while we waited for the lock
                return
            self._write(initial_state(config))

    def _state(self) -> dict[str, Any]:
        """The current state. An owner found dead for the first time is recorded (one write per
        death), so its memory comes back `delay` after that moment whoever looks next."""
        state = self._read()
        if _newly_dead(state):
            with self._changing() as (fresh, _):
                state = fresh
        return state

    @contextmanager
    def _changing(self) -> Iterator[tuple[dict[str, Any], float]]:
        """Read-modify-write under the lock; deaths are recorded and freed entries pruned on every change."""
        with self._locked():
            state, now = self._read(), time.time()
            _record_deaths(state, now)
            yield state, now
            state["entries"] = {k: e for k, e in state["entries"].items() if _counts(e, now)}
            self._write(state)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor drops the lock

    def _read(self) -> dict[str, Any]:
        with open(self.path, encoding="utf-8") as f:
            return json.load(f)

    def _write(self, state: dict[str, Any]) -> None:
        # No fsync: the ledger lives only as long as the run, and it is written at every allocation.
        atomic.write_bytes(self.path, json.dumps(state, separators=(",", ":")).encode(), sync=False)

    def discard_partial_write(self) -> None:
        """Remove the temporary file of a writer that was killed between writing and renaming it
        (a SIGKILLed worker); under the lock, so no live writer's file is taken."""
        with self._locked():
            for tmp in atomic.temporaries(self.path):
                tmp.unlink(missing_ok=True)

    def _device(self, state: dict[str, Any], device: int | str) -> dict[str, int]:
        try:
            return state["devices"][_key(device)]
        except KeyError:
            raise ValueError(f"no simulated device {_key(device)!r} in {self.path} "
                             f"(devices: {', '.join(_names(state))})") from None


def initial_state(config: dict[str, Any]) -> dict[str, Any]:
    """An empty ledger for `count` devices of `total_gib`, `baseline_gib` used by other tenants."""
    cfg = {**DEFAULTS, **config}
    device = {"total": int(float(cfg["total_gib"]) * GIB), "baseline": int(float(cfg["baseline_gib"]) * GIB)}
    return {"version": VERSION, "release_delay_s": float(cfg["release_delay_s"]),
            "release_jitter_s": float(cfg["release_jitter_s"]), "seed": int(cfg["seed"]), "next_id": 1,
            "devices": {str(i): dict(device) for i in range(int(cfg["count"]))}, "entries": {}}


def _names(state: dict[str, Any]) -> list[str]:
    return sorted(state["devices"], key=lambda d: (len(d), d))  # "2" before "10"


def _key(device: int | str) -> str:
    return str(device).strip()


def _counts(entry: dict[str, Any], now: float) -> bool:
    """Still used: held, or released but not yet reclaimed."""
    return entry["free_at"] is None or entry["free_at"] > now


def _used(state: dict[str, Any], device: str, now: float) -> int:
    held = sum(e["nbytes"] for e in state["entries"].values() if e["device"] == device and _counts(e, now))
    return state["devices"][device]["baseline"] + held


def _schedule_free(state: dict[str, Any], entry_id: int | str, entry: dict[str, Any], now: float,
                   how: str, delay_s: float | None = None) -> None:
    """Mark an entry released: free at now + delay + a jitter drawn from (seed, entry id), so a
    run with the same seed reclaims at the same offsets."""
    delay = entry["delay_s"] if delay_s is None else float(delay_s)
    jitter = state["release_jitter_s"]
    if jitter > 0:
        delay += random.Random(f"{state['seed']}:{entry_id}").uniform(0.0, jitter)
    entry["free_at"] = now + delay
    entry["how"] = how


def _newly_dead(state: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Held entries whose process has died, as (id, entry). Each owner is looked at once: an
    engine has one entry per device, and this runs on every poll."""
    alive: dict[tuple[int, str | None], bool] = {}
    dead = []
    for entry_id, entry in state["entries"].items():
        if entry["free_at"] is None:
            owner = (entry["pid"], entry.get("pid_start"))
            if owner not in alive:
                alive[owner] = _alive(*owner)
            if not alive[owner]:
                dead.append((entry_id, entry))
    return dead


def _record_deaths(state: dict[str, Any], now: float) -> None:
    for entry_id, entry in _newly_dead(state):
        _schedule_free(state, entry_id, entry, now, "exit")


# ---------------------------------------------------------------------- process liveness
def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state letter, start time in clock ticks) from /proc, or None where there is no /proc."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
    except OSError:
        return None
    try:
        raw = os.read(fd, 4096)
    finally:
        os.close(fd)
    # fields after the command name, which may itself contain spaces and parentheses
    fields = raw.rsplit(b")", 1)[-1].decode("ascii", "replace").split()
    return (fields[0], fields[19]) if len(fields) > 19 else None


def _start_time(pid: int) -> str | None:
    stat = _proc_stat(pid)
    return stat[1] if stat else None


def _alive(pid: int, start: str | None) -> bool:
    """A zombie counts as dead (its memory is gone even before it is reaped), and so does a pid
    that now belongs to a different process (same pid, different start time)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's live process
    stat = _proc_stat(pid)
    if stat is None:
        return True
    state, started = stat
    return state not in ("Z", "X") and (start is None or started == start)


class LedgerCleanup(RunnerHooks):
    """A real device's runner hooks: nothing to settle; an injected orphan may still have written
    the run's ledger, and a half-done write of a killed worker is discarded at the end."""

    def finish(self, ledger: Path) -> None:
        """A ledger write a killed worker left half done is discarded."""
        if ledger.exists():
            Ledger(ledger).discard_partial_write()


class LedgerRunnerHooks(LedgerCleanup):
    """The runner's side of a device that lives in the run's ledger (simulated or modelled)."""

    def orphan_memory(self, ledger: Path, pid: int) -> dict[str, Any]:
        """The device memory the ledger says process ``pid`` holds."""
        return {"device_bytes": Ledger(str(ledger)).held_by(pid)} if ledger.exists() else {}
