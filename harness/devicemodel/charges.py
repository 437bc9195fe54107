"""Charges on the modelled device, held for exactly as long as the real objects behind them live.

A charge is one ledger entry (harness.sim.ledger: a file shared by every process of the run,
changed under an exclusive lock) plus a `weakref.finalize` on each real tensor it stands for. When
the last of those tensors is garbage-collected the entry is released, and the ledger counts it as
used for the model's release delay more (ROCm's lazy reclaim). A process that dies holding a
charge is found dead by the ledger, which releases its entries from that moment, after the same
delay. Nothing here knows what a teardown does: memory comes back only when CPython frees objects.

Finalizers run wherever the garbage collector happens to run, possibly while this process holds
the ledger's lock, so they only note the time and queue the release; a daemon thread writes it,
and `flush()` (the probe, before it reads) writes what is queued at once. Standard library only.
"""

from __future__ import annotations

import os
import queue
import threading
import time
import weakref
from typing import Iterable

from harness.sim.ledger import Ledger

FLUSH_WAIT_S = 1.0  # longest a probe waits for a release the writer thread is writing


class Charges:
    def __init__(self, ledger: Ledger, release_delay_s: float):
        self.ledger = ledger
        self.release_delay_s = release_delay_s
        self._pid = os.getpid()
        self._queue: queue.SimpleQueue[tuple[int, float]] = queue.SimpleQueue()
        self._pending: list[int] = []  # entries released by a finalizer, not yet written
        self._lock = threading.Lock()
        self._writer: threading.Thread | None = None

    def charge(self, device: str, nbytes: int, owner: str, tensors: Iterable[object]) -> int:
        """Take `nbytes` on `device` until every one of `tensors` is gone (or this process is)."""
        tensors = list(tensors)
        entry = self.ledger.allocate(device, nbytes, owner, delay_s=self.release_delay_s)
        live = [None] * len(tensors)  # one token per tensor; list.pop is atomic under the GIL
        for t in tensors:
            weakref.finalize(t, self._gone, entry, live)
        if not tensors:
            self._gone(entry, live)
        self._start_writer()
        return entry

    def _gone(self, entry: int, live: list) -> None:
        """A tensor of `entry` was freed. Runs inside the garbage collector: no I/O, no locks."""
        if os.getpid() != self._pid:
            return  # a forked child's copy of the parent's tensors: not this process's charge
        if live:
            live.pop()
        if not live:
            self._pending.append(entry)
            self._queue.put((entry, time.time()))

    def _start_writer(self) -> None:
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_forever, name="device-model-releases", daemon=True)
            self._writer.start()

    def _write_forever(self) -> None:
        while True:
            item = self._queue.get()
            with self._lock:
                self._write(item)

    def _write(self, item: tuple[int, float]) -> None:
        entry, at = item
        try:
            self.ledger.release(entry, at=at)
        finally:
            self._pending.remove(entry)

    def flush(self) -> None:
        """Write every queued release now (and wait briefly for one being written), so a reading
        taken right after `del llm` already sees what the collector freed."""
        with self._lock:
            while True:
                try:
                    self._write(self._queue.get_nowait())
                except queue.Empty:
                    break
        deadline = time.monotonic() + FLUSH_WAIT_S
        while self._pending and time.monotonic() < deadline:
            time.sleep(0.001)


_charges: Charges | None = None


def for_process(ledger_path: str, config: dict, release_delay_s: float) -> Charges:
    """This process's charges on the run's ledger (one per process)."""
    global _charges
    if _charges is None or _charges._pid != os.getpid():
        _charges = Charges(Ledger(ledger_path, config), release_delay_s)
    return _charges


def current() -> Charges | None:
    """This process's charges, if it has made any."""
    return _charges if _charges is not None and _charges._pid == os.getpid() else None
