"""Which engines of this process are still alive, who built them, and when the dead ones were freed.

The worker registers every engine build (a YAML step's `vllm.LLM`, an upstream test's, an
`HfRunner` model) with a weak reference to the object and a `weakref.finalize` on it. That is all
it takes to tell the two ways memory can still be held after a teardown:

- the object still exists: something still refers to it (a module- or session-scoped fixture, a
  global, a frozen reference cycle), and no wait can ever bring its memory back;
- it was freed at a known moment, and the device has not given the memory back yet (ROCm's lazy
  reclaim, the modelled device's release delay): a wait will end.

An engine whose EngineCore runs in child processes (vLLM's default on a GPU) is gone when its object
is freed and those processes have exited: the processes the worker gained while building it are
watched, and their exit is seen at the next reading (`drain`).

Finalizers run inside the garbage collector, possibly while the worker is writing an event, so they
only note the time; `drain()` hands the notes out at a safe point. Standard library only.
"""

from __future__ import annotations

import os
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

TOLERANCE_BYTES = 64 << 20  # allocator noise between two readings of an idle device


@dataclass
class Engine:
    built_by: str  # the step or test that built it
    index: int  # that step's index in the worker's plan
    build: int | None  # its build number within the test (pytest suites), None for a YAML step
    engine_bytes: list[int]  # per device: what its construction took
    pids: tuple[int, ...] = ()  # its EngineCore processes: children the worker gained while building it
    ref: Any = field(repr=False, default=None)  # weakref.ref to the object
    object_freed_at: float | None = None  # epoch seconds when the object was freed
    seen_running_at: float | None = None  # last time one of its processes was seen running after that
    freed_at: float | None = None  # epoch seconds when it was gone: object freed, processes exited
    shut_down: bool = False  # its engine core was shut down by a teardown action: it holds nothing

    @property
    def alive(self) -> bool:
        return self.object_freed_at is None and self.ref is not None and self.ref() is not None


class EngineRegistry:
    def __init__(self) -> None:
        self.engines: list[Engine] = []
        self._freed: list[Engine] = []  # noted by finalizers, not yet drained

    def register(self, obj: Any, built_by: str, index: int, build: int | None,
                 engine_bytes: Sequence[int], pids: Sequence[int] = ()) -> Engine:
        engine = Engine(built_by, index, build, [max(0, int(b)) for b in engine_bytes], tuple(pids))
        try:
            engine.ref = weakref.ref(obj)
            weakref.finalize(obj, self._gone, engine).atexit = False
        except TypeError:  # an object without weak references: its life cannot be followed
            engine.ref = None
            return engine
        self.engines.append(engine)
        return engine

    def _gone(self, engine: Engine) -> None:
        """Runs inside the garbage collector: no I/O, no locks."""
        engine.object_freed_at = time.time()
        self._freed.append(engine)

    def drain(self) -> list[Engine]:
        """Engines gone since the last call (for their `engine_freed` events): object freed and
        EngineCore processes exited; one whose processes still run is looked at again next time."""
        pending, self._freed = self._freed, []
        out, now = [], time.time()
        for e in pending:
            if any(_running(pid) for pid in e.pids):
                e.seen_running_at = now
                self._freed.append(e)
            else:
                e.freed_at = max(e.object_freed_at or now, e.seen_running_at or 0.0)
                out.append(e)
        return out

    def live(self) -> list[Engine]:
        return [e for e in self.engines if e.alive]

    def shut_down(self, obj: Any) -> None:
        """``obj``'s engine core was shut down: its memory is given back though the object lives."""
        for e in self.engines:
            if e.ref is not None and e.ref() is obj:
                e.shut_down = True

    def blocking(self, readings: Sequence[tuple[int, int]], ceilings: Sequence[int],
                 pending: Callable[[], Sequence[int]] | None = None) -> list[Engine]:
        """The live engines a wait for ``ceilings`` is waiting on in vain: every device over its
        ceiling would be under it but for what live engines hold, so nothing left to release can
        end the wait. Empty while memory is still pending release (``pending``: reads it per device,
        where the device tells: the simulated and the modelled one; read only when it decides), or
        nothing live holds any."""
        # where the device tells what is on its way back, a live object whose memory was given back
        # shows as pending; elsewhere an engine core shut down by the teardown is taken at its word
        live = [e for e in self.live() if pending is not None or not e.shut_down]
        if not live:
            return []
        over = [i for i, ((used, _), ceiling) in enumerate(zip(readings, ceilings)) if used > ceiling]
        if not over:
            return []
        back = pending() if pending is not None else ()
        if any(back[i] for i in over if i < len(back)):
            return []
        for i in over:
            held = sum(e.engine_bytes[i] if i < len(e.engine_bytes) else 0 for e in live)
            if held == 0 or readings[i][0] - held > ceilings[i] + TOLERANCE_BYTES:
                return []
        return [e for e in live if any(i < len(e.engine_bytes) and e.engine_bytes[i] for i in over)]


def children() -> set[int]:
    """This process's child processes (Linux: /proc; elsewhere none are known)."""
    found: set[int] = set()
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/children", encoding="ascii") as f:
                found.update(int(p) for p in f.read().split())
        except (OSError, ValueError):
            continue
    return found


def _running(pid: int) -> bool:
    """A zombie has exited: its memory is the device's to give back."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            state = f.read().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")
