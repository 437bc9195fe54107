"""Teardown actions: what a profile's data turns into, run in the worker after (and before) each step.

Every action is the same code for every backend: the LLM object of both backends has
``llm.llm_engine.engine_core.shutdown()``, and `cleanup_dist_env` / `empty_cache` ask the backend.
Device memory is sampled after every action, so the engine half of a fix shows in the figures even
when no construction fails.
"""

from __future__ import annotations

import gc
import importlib
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from harness.device import GIB
from harness.scenario import specs


class MemoryNotFreed(ValueError):
    """Raised by `wait_memory`; worded like upstream's wait_for_gpu_memory_to_clear."""


class LiveEngineHolds(MemoryNotFreed):
    """Raised by `wait_memory` as soon as the only memory left to wait for is held by engines that
    are still alive in this process: no wait can end, so none is made."""

    def __init__(self, message: str, built_by: list[str]):
        super().__init__(message)
        self.built_by = built_by


@dataclass
class TeardownContext:
    """What actions act on. ``llm`` is the only reference the worker keeps to the engine."""

    llm: Any
    backend: Any
    probe: Any
    devices: Sequence[int]
    gpu_memory_utilization: float
    scenario_dir: str = "."
    started: float = field(default_factory=time.monotonic)
    released_at: float | None = None  # monotonic time usage was first seen under the threshold
    engines: Any = None  # worker/engines.py's EngineRegistry: which engines of this process are alive
    waited_s: float = 0.0  # seconds spent in wait_memory and sleep: the teardown's cost

    def used(self) -> list[tuple[int, int]]:
        return self.probe.read(self.devices)

    def threshold_bytes(self, threshold: Any = "auto", readings: list[tuple[int, int]] | None = None) -> list[int]:
        """Per-device ceiling of used memory. `auto` = (1 - gpu_memory_utilization) x total, as upstream.
        ``readings``: (used, total) per device already taken; read now when None."""
        totals = [total for _, total in (self.used() if readings is None else readings)]
        if threshold == "auto":
            return [round((1.0 - self.gpu_memory_utilization) * t) for t in totals]
        if isinstance(threshold, float):
            return [round(threshold * t) for t in totals]
        return [int(threshold)] * len(totals)

    def is_free(self, threshold: Any = "auto", readings: list[tuple[int, int]] | None = None) -> bool:
        readings = self.used() if readings is None else readings
        return all(u <= c for (u, _), c in zip(readings, self.threshold_bytes(threshold, readings)))


@dataclass(frozen=True)
class ActionSpec:
    run: Callable[[TeardownContext, dict], None]
    params: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    doc: str = ""


def _engine_core_shutdown(ctx: TeardownContext, p: dict) -> None:
    if ctx.llm is None:
        return
    core = ctx.llm.llm_engine.engine_core
    try:  # timeout: upstream passes 60 s on ROCm so the EngineCore is not SIGKILLed at vLLM's 5 s
        core.shutdown(timeout=float(p["timeout_s"])) if "timeout_s" in p else core.shutdown()
    except Exception as e:
        if not p.get("ignore_errors"):
            raise
        print(f"[harness] engine_core_shutdown: ignored {type(e).__name__}: {e}", flush=True)  # as upstream
    if ctx.engines is not None:  # an LLM kept alive after this holds no memory: no wait is in vain
        ctx.engines.shut_down(ctx.llm)


def _del_llm(ctx: TeardownContext, p: dict) -> None:
    ctx.llm = None


def _gc_collect(ctx: TeardownContext, p: dict) -> None:
    gc.collect()


def _gc_unfreeze(ctx: TeardownContext, p: dict) -> None:
    gc.unfreeze()


def _dynamo_reset(ctx: TeardownContext, p: dict) -> None:
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "_dynamo"):
        torch._dynamo.reset()


def _cleanup_dist_env(ctx: TeardownContext, p: dict) -> None:
    ctx.backend.cleanup_dist_env()


def _empty_cache(ctx: TeardownContext, p: dict) -> None:
    ctx.backend.empty_cache()


#: how much a reading may move and still count as stable (upstream's stable_tolerance_bytes)
STABLE_TOLERANCE_BYTES = 512 << 20


def wait_memory(ctx: TeardownContext, p: dict) -> None:
    """Poll until every device is under the threshold (never below ``floor_bytes``) and, with
    ``stable_s``, has stayed there within 512 MiB that long (upstream's wait_for_rocm_memory_to_settle).
    Polls every 50 ms (upstream: 5 s, or 1 s when settling), so it returns within about one poll of
    the memory actually being free. It stops at once, with `LiveEngineHolds`, when what is left over
    the threshold is held by engines still alive in this process (a fixture's, a global's): they
    give nothing back however long it waits."""
    threshold = p.get("threshold", "auto")
    timeout = float(p.get("timeout_s", 120.0))
    poll = float(p.get("poll_s", 0.05))
    stable_s, floor = float(p.get("stable_s", 0.0)), int(p.get("floor_bytes", 0))
    start = time.monotonic()
    deadline = start + timeout
    since, seen = None, None  # since when the readings `seen` have held under the threshold
    try:
        while True:
            readings = ctx.used()
            ceilings = [max(c, floor) for c in ctx.threshold_bytes(threshold, readings)]
            if all(u <= c for (u, _), c in zip(readings, ceilings)):
                now, used = time.monotonic(), [u for u, _ in readings]
                if seen is None or any(abs(a - b) > STABLE_TOLERANCE_BYTES for a, b in zip(used, seen)):
                    since, seen = now, used
                if now - since >= stable_s:
                    ctx.released_at = ctx.released_at or since
                    return
            else:
                since, seen = None, None
                _live_engines_hold(ctx, readings, ceilings, threshold, start, timeout)
            if time.monotonic() >= deadline:
                used = ", ".join(f"{u / GIB:.2f} GiB" for u, _ in ctx.used())
                raise MemoryNotFreed(
                    f"Memory of devices {list(ctx.devices)} not free after {timeout:g} seconds "
                    f"(used: {used}; threshold: {threshold})")
            time.sleep(poll)
    finally:
        ctx.waited_s += time.monotonic() - start


def _live_engines_hold(ctx: TeardownContext, readings, ceilings, threshold: Any, start: float, timeout: float) -> None:
    """Raise `LiveEngineHolds` when only engines alive in this process keep the memory over the
    ceilings (worker/engines.py), and nothing else is on its way back."""
    if ctx.engines is None:
        return
    pending = getattr(ctx.probe, "pending", None)
    live = ctx.engines.blocking(readings, ceilings, (lambda: pending(ctx.devices)) if pending else None)
    if live:
        names = list(dict.fromkeys(e.built_by for e in live))
        used = ", ".join(f"{u / GIB:.2f} GiB" for u, _ in readings)
        raise LiveEngineHolds(
            f"Memory of devices {list(ctx.devices)} can never be freed by waiting: held by a live engine built "
            f"by {', '.join(names)} (still referenced; used: {used}; threshold: {threshold}; gave up after "
            f"{time.monotonic() - start:.2f} of {timeout:g} seconds)", names)


def _sleep(ctx: TeardownContext, p: dict) -> None:
    start = time.monotonic()
    try:
        time.sleep(float(p.get("seconds", 1.0)))
    finally:
        ctx.waited_s += time.monotonic() - start


def _call(ctx: TeardownContext, p: dict) -> None:
    """Run the user's `module:function(ctx, **kwargs)`. This is the user's own code, like a conftest.py."""
    module_name, _, func_name = p["target"].partition(":")
    if ctx.scenario_dir not in sys.path:
        sys.path.insert(0, ctx.scenario_dir)
    func = getattr(importlib.import_module(module_name), func_name)
    func(ctx, **p.get("kwargs", {}))


_RUN = {"engine_core_shutdown": _engine_core_shutdown, "del_llm": _del_llm, "gc_collect": _gc_collect,
        "gc_unfreeze": _gc_unfreeze, "dynamo_reset": _dynamo_reset, "cleanup_dist_env": _cleanup_dist_env,
        "empty_cache": _empty_cache, "wait_memory": wait_memory, "sleep": _sleep, "call": _call}
#: every action a profile may name (scenario/specs.py), with its code
ACTIONS: dict[str, ActionSpec] = {name: ActionSpec(_RUN[name], p.params, p.required, p.doc)
                                  for name, p in specs.ACTIONS.items()}

#: actions that only wait; an injected lazy release happens before the first of a trailing run of these
WAITING_ACTIONS = frozenset({"wait_memory", "sleep"})


def run_action(ctx: TeardownContext, action: dict) -> None:
    ACTIONS[action["name"]].run(ctx, dict(action.get("params", {})))
