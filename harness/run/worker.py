"""The worker: runs one (variant, repeat) of a scenario inside its own process.

Steps run back-to-back in this one process, exactly as a pytest worker runs a suite:
[settle] -> construct -> workload -> expect -> teardown, recording device memory and streaming one
JSON event per line. Standard library only (plus vLLM through the backend), so any interpreter
with vLLM installed can run it: ``python -m harness.run.worker PLAN.json``.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from types import SimpleNamespace
from typing import Any

from harness import atomic, backends
from harness.run import expect
from harness.run import faults
from harness.run import lifeline
from harness.run import probes
from harness.run import teardown
from harness.model import DISK_FULL_ERRNOS, EXIT_DISK_FULL, Outcome, Phase

DEFAULT_GPU_MEMORY_UTILIZATION = 0.9  # vLLM's default


class ExpectationFailed(AssertionError):
    """An expectation on the engine's outputs did not hold."""


class ResultsDiskFull(Exception):
    """The worker cannot write its results (the events file; the simulated ledger raises
    atomic.DiskFull): the run stops, it is no failure of the step."""


class Events:
    """Appends one JSON object per line and flushes it, so the runner sees it at once."""

    def __init__(self, path: str, variant: str, repeat: int):
        self._f = open(path, "a", encoding="utf-8")
        self._base = {"variant": variant, "repeat": repeat}

    def emit(self, event: str, **fields: Any) -> None:
        try:
            self._f.write(json.dumps({"t": time.time(), "event": event, **self._base, **fields}, default=str) + "\n")
            self._f.flush()
        except OSError as e:
            if e.errno in DISK_FULL_ERRNOS:
                raise ResultsDiskFull(e) from None
            raise


def _text(exc: BaseException) -> str:
    """The message of an exception from the user's code, even one whose __str__ raises."""
    try:
        return str(exc)
    except Exception:  # noqa: BLE001
        return f"<{type(exc).__name__}: its str() raised>"


def _disk_full(error: BaseException) -> bool:
    """The worker's own results could not be written (not a full disk the step's code met)."""
    return isinstance(error, (ResultsDiskFull, atomic.DiskFull))


def _to_log(text: str | None = None) -> None:
    """Write `text` (if any) to the variant's log and flush it: the log is one of the worker's
    results, so a full disk here stops the run (ResultsDiskFull), as with the events."""
    try:
        if text is not None:
            print(text, file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError as e:
        if e.errno in DISK_FULL_ERRNOS:
            raise ResultsDiskFull(e) from None
        raise


def log_offset() -> int:
    """Byte offset in the variant's log (stdout and stderr go to one file), for per-step log tails."""
    _to_log()
    try:
        return os.fstat(1).st_size
    except OSError:
        return 0


class StepRunner:
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

    # ------------------------------------------------------------------ memory
    def sample(self, step: dict, label: str) -> list[tuple[int, int]]:
        readings = self.probe.read(self.devices)
        beside = probes.beside(self.probe, self.devices, readings)  # a second probe's opinion
        host = getattr(self.probe, "host", None)  # a modelled device keeps host memory beside it
        if host is not None:
            beside["host_used_bytes"] = host.read(self.devices[:1])[0][0]
        self.events.emit("memory", step=step["name"], index=step["index"], label=label,
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
            self.events.emit("action", step=step["name"], index=step["index"], name=action["name"],
                             duration_s=time.monotonic() - start, used_bytes=sum(u for u, _ in readings),
                             ok=error is None, error=f"{type(error).__name__}: {_text(error)}" if error else "")
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
        name, index = step["name"], step["index"]
        util = float(step["engine"].get("gpu_memory_utilization", DEFAULT_GPU_MEMORY_UTILIZATION))
        ctx = teardown.TeardownContext(llm=None, backend=self.backend, probe=self.probe, devices=self.devices,
                                       gpu_memory_utilization=util, scenario_dir=self.plan.get("scenario_dir", "."))
        self.events.emit("step_start", step=name, index=index, timeout_s=step["timeout_s"], log_offset=log_offset(),
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
            ctx.llm = self.in_phase(step, phase, lambda: self.backend.construct(dict(step["engine"])))
            held = self.sample(step, "after_construct")
            self.events.emit("threshold", step=name, index=index,
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
            if _disk_full(e):
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
            _to_log(f"[harness] step {name}: passed")
        else:
            _to_log(f"[harness] step {name}: failed in {failure[0]}\n{failure[2].rstrip()}")
        latency = (ctx.released_at - ctx.started) if ctx.released_at and held is not None else None
        fields: dict[str, Any] = {"outcome": str(Outcome.PASSED), "expectations": expectations,
                                  "release_latency_s": latency, "log_offset": log_offset()}
        after_free = self._release_after_free(ctx) if held is not None else None
        self._lazy_releases = None
        if after_free is not None:
            fields["release_after_free_s"] = after_free
        if failure is not None:
            phase, exc, tb = failure
            fields.update(outcome=str(Outcome.FAILED), phase=str(phase), error_type=type(exc).__name__,
                          message=_text(exc), traceback=tb)
        self.events.emit("step_end", step=name, index=index, **fields)

    def _teardown(self, step: dict, ctx: teardown.TeardownContext, held):
        ctx.started = time.monotonic()
        try:
            self.in_phase(step, Phase.TEARDOWN, lambda: self.run_actions(step, ctx, self.profile["after"], held))
        except Exception as e:
            if _disk_full(e):
                raise
            tb = traceback.format_exc()
            traceback.clear_frames(e.__traceback__)
            return (Phase.TEARDOWN, e, tb)
        finally:
            ctx.llm = None  # whatever the profile did, the next step starts without this engine
        return None

    def in_phase(self, step: dict, phase: Phase, fn):
        self.events.emit("phase_start", step=step["name"], index=step["index"], phase=str(phase))
        start = time.monotonic()
        try:
            # injected faults fire inside the phase, so a hang or crash is reported in the right one
            faults.at(self.plan.get("inject", {}), step["name"], str(phase), self.plan["repeat"])
            return fn()
        finally:
            self.events.emit("phase_end", step=step["name"], index=step["index"], phase=str(phase),
                             duration_s=time.monotonic() - start)

    def _workload(self, llm: Any, workload: dict) -> expect.Results:
        prompts = list(workload["prompts"])
        return [[self.backend.generate(llm, prompts, dict(sp)) for _ in range(workload["runs"])]
                for sp in workload["sampling"]]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    lifeline.watch()  # a runner killed by SIGKILL must not leave this worker holding the device
    with open(argv[0], encoding="utf-8") as f:
        plan = json.load(f)
    if plan.get("pytest"):  # vLLM's own test files instead of steps
        from harness.upstream import suite

        return suite.main(plan)
    events = Events(plan["events"], plan["variant"], plan["repeat"])
    backend = backends.load(plan)
    runner = StepRunner(plan, events, backend)
    readings = runner.probe.read(runner.devices)
    events.emit("worker_start", pid=os.getpid(), info={**backend.info(), "devices": runner.devices,
                                                      "total_bytes": sum(t for _, t in readings)})
    try:
        for step in plan["steps"]:
            runner.run(step)
        events.emit("worker_end")
    except Exception as e:
        if not _disk_full(e):
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
    # vLLM's atexit hooks can hang on a half-torn-down engine; the results are already written.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
