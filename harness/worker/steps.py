"""The steps of a scenario, run by the worker inside its own process (the `steps` suite kind).

Steps run back-to-back in this one process, exactly as a pytest worker runs a suite:
[settle] -> construct -> workload -> expect -> teardown, recording device memory and streaming one
JSON event per line. `StepRunner` is also what a pytest suite's engine builds run their teardown
through (harness/upstream/builds.py). Standard library only (plus vLLM through the backend).
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from types import SimpleNamespace
from typing import Any

from harness import events as vocab
from harness.device import DEFAULT_GPU_MEMORY_UTILIZATION, Backend, probes
from harness.model import EXIT_DISK_FULL, Outcome, Phase
from harness.worker import engines, expect, faults, teardown
from harness.worker.engines import EngineRegistry
from harness.worker.stream import Events, disk_full, log_offset, to_log
from harness.worker.stream import text as _text


class ExpectationFailed(AssertionError):
    """An expectation on the engine's outputs did not hold."""


def action_event(events: Any, step: dict, name: str, seconds: float, readings: list[tuple[int, int]],
                 error: str) -> None:
    """An `action` event: a teardown action of `step` (the profile's, upstream's ``__exit__`` or
    its wait helper), its time, the memory after it and its error ("" when it succeeded)."""
    events.emit(vocab.ACTION, step=step["name"], index=step["index"], name=name, duration_s=seconds,
                used_bytes=sum(u for u, _ in readings), ok=not error, error=error)


class StepRunner:
    """Runs steps with one backend and probe, streaming their events (also a pytest suite's engine
    builds, through harness/upstream/builds.py)."""

    def __init__(self, plan: dict[str, Any], events: Events, backend: Any):
        self.plan, self.events, self.backend = plan, events, backend
        self.probe = backend.probe()
        self.devices = plan["devices"] or [0]
        self.profile = plan["profile"]
        lazy = plan.get("inject", {}).get("lazy_release")
        # the simulated and the modelled device model a slow release as their release delay
        modelled = plan["backend"] == "sim" or plan.get("device_model")
        self.lazy = faults.LazyRelease(float(lazy["seconds"])) if lazy and not modelled else None
        if self.lazy:
            self.lazy.start()  # its torch import overlaps the first construction, not a teardown
        self._lazy_releases = None  # helper releases counted when this step's hold began
        self.engines = EngineRegistry()  # every engine built in this process, alive or gone

    def context(self, util: float, llm: Any = None) -> teardown.TeardownContext:
        """A teardown context on this worker's device, probe and engines."""
        return teardown.TeardownContext(llm=llm, backend=self.backend, probe=self.probe, devices=self.devices,
                                        gpu_memory_utilization=util, engines=self.engines,
                                        scenario_dir=self.plan.get("scenario_dir", "."))

    def register(self, obj: Any, step: dict, build: int | None, baseline, held, kids: set[int]) -> None:
        """Follow an engine's life (worker/engines.py): who built it, what it took, when it is gone;
        ``kids``: this process's children before it was built (the new ones are its EngineCore)."""
        self.engines.register(obj, step["name"], step["index"], build,
                              [max(0, h - b) for (h, _), (b, _) in zip(held, baseline)],
                              sorted(engines.children() - kids))

    def report_freed(self) -> None:
        """An `engine_freed` event for every engine gone since the last call (finalizers only
        note the time; here it is safe to write)."""
        for e in self.engines.drain():
            extra = {"build": e.build} if e.build is not None else {}
            self.events.emit(vocab.ENGINE_FREED, step=e.built_by, index=e.index, freed_at=e.freed_at, **extra)

    # ------------------------------------------------------------------ memory
    def sample(self, step: dict, label: str) -> list[tuple[int, int]]:
        """Read device memory and emit it as a ``memory`` event labelled ``label``."""
        readings = self.probe.read(self.devices)
        self.report_freed()
        beside = probes.beside(self.probe, self.devices, readings)  # a second probe's opinion
        host = getattr(self.probe, "host", None)  # a modelled device keeps host memory beside it
        if host is not None:
            beside["host_used_bytes"] = host.read(self.devices[:1])[0][0]
        self.events.emit(vocab.MEMORY, step=step["name"], index=step["index"], label=label,
                         used_bytes=sum(u for u, _ in readings), total_bytes=sum(t for _, t in readings),
                         per_device=[u for u, _ in readings], **beside)
        return readings

    def run_actions(self, step: dict, ctx: teardown.TeardownContext, actions: list[dict], held=None) -> None:
        """Run actions in order, sampling memory after each; an injected lazy release happens
        just before the trailing waits (where ROCm's reclaim would still be pending)."""
        inject_at = len(actions)
        while inject_at > 0 and actions[inject_at - 1]["name"] in teardown.WAITING_ACTIONS:
            inject_at -= 1
        for i, action in enumerate(actions + [None]):
            if i == inject_at and self.lazy and held is not None and faults.slow_release_s(
                    self.plan.get("inject", {}), step["name"], self.plan["repeat"]):
                self._lazy_release(step, ctx, held)
            if action is None:
                break
            start = time.monotonic()
            error = None
            try:
                teardown.run_action(ctx, action)
            except Exception as e:
                error = e
            readings = self.sample(step, f"after_{action['name']}")
            if ctx.released_at is None and ctx.is_free(readings=readings):
                ctx.released_at = time.monotonic()
            action_event(self.events, step, action["name"], time.monotonic() - start, readings,
                         f"{type(error).__name__}: {_text(error)}" if error else "")
            if error is not None:
                raise error

    def _lazy_release(self, step: dict, ctx: teardown.TeardownContext, held: list[tuple[int, int]]) -> None:
        now = self.probe.read(self.devices)
        for device, ((peak, _), (used, total)) in zip(self.devices, zip(held, now)):
            freed = max(0, peak - used)
            self.lazy.hold(device, min(freed, max(0, total - used - (256 << 20))))
        self._lazy_releases = self.lazy.releases
        readings = self.sample(step, "after_lazy_release")
        if not ctx.is_free(readings=readings):
            # what an earlier action saw freed is held again, as ROCm would still hold it: the
            # release latency counts until the memory is really back
            ctx.released_at = None

    def _release_after_free(self, ctx: teardown.TeardownContext) -> float | None:
        """Seconds from the helper really giving its hold back to the teardown seeing the memory
        under the threshold (how late the wait noticed); None without an injected hold."""
        if self._lazy_releases is None or ctx.released_at is None:
            return None
        freed = self.lazy.freed_after(self._lazy_releases, timeout=2.0)
        if freed is None:
            return None
        return time.time() - (time.monotonic() - ctx.released_at) - freed

    # ------------------------------------------------------------------ one step
    def run(self, step: dict) -> None:
        """One step: [settle] -> construct -> workload -> expect -> teardown, its events emitted;
        a failure of the step is its ``step_end``, never an exception (a full disk is)."""
        name, index = step["name"], step["index"]
        util = float(step["engine"].get("gpu_memory_utilization", DEFAULT_GPU_MEMORY_UTILIZATION))
        ctx = self.context(util)
        self.events.emit(vocab.STEP_START, step=name, index=index, timeout_s=step["timeout_s"], log_offset=log_offset(),
                         engine_process=self.backend.engine_process())
        failure: tuple[Phase, BaseException, str] | None = None
        expectations: list[dict] = []
        held = None
        phase = Phase.SETTLE
        try:
            if self.profile["before"]:
                self.in_phase(step, phase, lambda: self.run_actions(step, ctx, self.profile["before"]))
            baseline = self.sample(step, "before_construct")
            phase = Phase.CONSTRUCT
            kids = engines.children()
            ctx.llm = self.in_phase(step, phase, lambda: self.backend.construct(dict(step["engine"])))
            held = self.sample(step, "after_construct")
            self.register(ctx.llm, step, None, baseline, held, kids)
            self.events.emit(vocab.THRESHOLD, step=name, index=index,
                             threshold_bytes=sum(ctx.threshold_bytes("auto")),
                             engine_bytes=sum(max(0, h - b) for (h, _), (b, _) in zip(held, baseline)))
            if step.get("workload"):
                phase = Phase.WORKLOAD
                results = self.in_phase(step, phase, lambda: self._workload(ctx.llm, step["workload"]))
                self.sample(step, "after_workload")
                phase = Phase.EXPECT
                checked = self.in_phase(step, phase, lambda: expect.evaluate(
                    step["expect"], results, SimpleNamespace(**step["workload"])))
                expectations = [{"name": n, "ok": ok, "detail": d} for n, ok, d in checked]
                failed = [e for e in expectations if not e["ok"]]
                if failed:
                    raise ExpectationFailed("; ".join(f"{e['name']}: {e['detail']}" for e in failed))
        except Exception as e:
            if disk_full(e):
                raise  # not the step's failure: the run stops (main)
            failure = (phase, e, traceback.format_exc())
            traceback.clear_frames(e.__traceback__)  # frames would keep the engine alive
            del e
        teardown_failure = self._teardown(step, ctx, held)
        if failure is None and teardown_failure is not None:
            failure = teardown_failure
        # the log says what happened too, whatever the backend (the simulated one writes nothing
        # itself), so the log alone can be read, and classified, without the events
        if failure is None:
            to_log(f"[harness] step {name}: passed")
        else:
            to_log(f"[harness] step {name}: failed in {failure[0]}\n{failure[2].rstrip()}")
        latency = (ctx.released_at - ctx.started) if ctx.released_at and held is not None else None
        fields: dict[str, Any] = {"outcome": str(Outcome.PASSED), "expectations": expectations,
                                  "release_latency_s": latency, "log_offset": log_offset(),
                                  "wait_s": round(ctx.waited_s, 6)}
        after_free = self._release_after_free(ctx) if held is not None else None
        self._lazy_releases = None
        if after_free is not None:
            fields["release_after_free_s"] = after_free
        if failure is not None:
            phase, exc, tb = failure
            fields.update(outcome=str(Outcome.FAILED), phase=str(phase), error_type=type(exc).__name__,
                          message=_text(exc), traceback=tb)
            if isinstance(exc, teardown.LiveEngineHolds):
                fields["live_engine_built_by"] = ", ".join(exc.built_by)
        self.report_freed()
        self.events.emit(vocab.STEP_END, step=name, index=index, **fields)

    def _teardown(self, step: dict, ctx: teardown.TeardownContext, held):
        ctx.started = time.monotonic()
        try:
            self.in_phase(step, Phase.TEARDOWN, lambda: self.run_actions(step, ctx, self.profile["after"], held))
        except Exception as e:
            if disk_full(e):
                raise
            tb = traceback.format_exc()
            traceback.clear_frames(e.__traceback__)
            return (Phase.TEARDOWN, e, tb)
        finally:
            ctx.llm = None  # whatever the profile did, the next step starts without this engine
        return None

    def in_phase(self, step: dict, phase: Phase, fn):
        """``fn()`` inside ``phase``, between its ``phase_start`` and ``phase_end`` events."""
        self.events.emit(vocab.PHASE_START, step=step["name"], index=step["index"], phase=str(phase))
        start = time.monotonic()
        try:
            # injected faults fire inside the phase, so a hang or crash is reported in the right one
            faults.at(self.plan.get("inject", {}), step["name"], str(phase), self.plan["repeat"])
            return fn()
        finally:
            self.events.emit(vocab.PHASE_END, step=step["name"], index=step["index"], phase=str(phase),
                             duration_s=time.monotonic() - start)

    def _workload(self, llm: Any, workload: dict) -> expect.Results:
        prompts = list(workload["prompts"])
        return [[self.backend.generate(llm, prompts, dict(sp)) for _ in range(workload["runs"])]
                for sp in workload["sampling"]]


def main(plan: dict[str, Any], backend: Backend) -> int:
    """Run every step of a worker plan with ``backend``; the process ends here (`os._exit`): vLLM's
    atexit hooks can hang on a half-torn-down engine, and the results are already written."""
    events = Events(plan["events"], plan["variant"], plan["repeat"])
    runner = StepRunner(plan, events, backend)
    readings = runner.probe.read(runner.devices)
    events.emit(vocab.WORKER_START, pid=os.getpid(), info={**backend.info(), "devices": runner.devices,
                                                      "total_bytes": sum(t for _, t in readings)})
    try:
        for step in plan["steps"]:
            runner.run(step)
        runner.report_freed()
        events.emit(vocab.WORKER_END)
    except Exception as e:
        if not disk_full(e):
            raise
        try:
            print(f"worker: stopped, the disk is full: {e}", file=sys.stderr, flush=True)
        except OSError:
            pass
        os._exit(EXIT_DISK_FULL)  # the runner keeps what was written and stops the run
    finally:
        if runner.lazy:
            runner.lazy.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
