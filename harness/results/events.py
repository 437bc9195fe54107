"""Turn a worker's event stream (the vocabulary of harness/events.py) into step results.

A step that started but never ended means the worker hung (we stopped it: `timeout`) or died
(`crash`); the steps after it never ran (`skipped`). Either way the results so far are kept.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from harness import atomic
from harness import events as vocab
from harness.results import classify, logfacts
from harness.model import (NEVER_STARTED, NOT_RUN, Expectation, FailureClass, MemorySample, Outcome, Phase,
                           StepResult)

LOG_TAIL_BYTES = 8000

# A SIGKILL nobody in the run sent is, on a CI machine, almost always the kernel's OOM killer (it
# picks the largest process: the worker or an EngineCore). Saying so saves a trip through the logs.
SIGKILL_NOTE = ("SIGKILL is what the kernel's OOM killer sends when host memory runs out: "
                "`dmesg` or `journalctl -k` shows 'Out of memory: Killed process PID'")


def _with_signal_note(message: str) -> str:
    return f"{message}; {SIGKILL_NOTE}" if "killed by SIGKILL" in message else message


class EventTail:
    """Reads new complete lines from a growing events file."""

    def __init__(self, path: Path):
        self.path = path
        self._pos = 0
        self._partial = ""

    def read(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, encoding="utf-8", errors="replace") as f:
                f.seek(self._pos)
                chunk = f.read()
                self._pos = f.tell()
        except FileNotFoundError:
            return []
        lines = (self._partial + chunk).split("\n")
        self._partial = lines.pop()
        out = []
        for line in lines:
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a torn line from a killed worker
        return out


def read_events(path: Path) -> list[dict[str, Any]]:
    """Every well-formed event of a finished events file; a torn or foreign line is skipped."""
    out = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    ev = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(ev, dict) and isinstance(ev.get("t"), (int, float)) and "variant" in ev:
                    out.append(ev)
    except OSError:
        return []
    return out


def merge_files(run_dir: Path, pairs: Iterable[tuple[str, int]]) -> None:
    """events.jsonl of a run directory: every worker's ``logs/<variant>-r<N>.events.jsonl`` in the order
    of ``pairs``, the run's (variant, repeat) matrix, which is the order the runner runs them in.
    The runner and the merge of shards both write it so, whatever the files' times say."""
    parts = [run_dir / "logs" / f"{v}-r{r}.events.jsonl" for v, r in pairs]
    atomic.write_text(run_dir / "events.jsonl", "".join(p.read_text(encoding="utf-8", errors="replace")
                                                        for p in parts if p.is_file()))


def log_slice(log: Path, start: int, end: int | None = None, limit: int = LOG_TAIL_BYTES) -> str:
    """The variant's log from byte ``start`` to ``end`` (its end), at most its last ``limit`` bytes."""
    try:
        with open(log, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            end = size if end is None else min(end, size)
            start = max(start, end - limit)
            f.seek(start)
            return f.read(end - start).decode("utf-8", errors="replace")
    except OSError:
        return ""


def collect(events: Iterable[dict], plan_steps: list[dict], *, log: Path, stopped: str | None,
            exit_description: str) -> tuple[dict[str, Any], list[StepResult]]:
    """Build one StepResult per planned step from the events of one worker.

    `stopped` is "timeout" when the runner killed a hung worker, "interrupted" on Ctrl-C, "disk_full"
    when the worker could not write its events, None when the worker exited by itself."""
    seen = _Steps()
    for ev in events:
        seen.add(ev)
    info, by_index = seen.info, seen.by_index
    results = []
    broken_at: str | None = None
    ends = _log_ends(plan_steps, by_index)
    for step in plan_steps:
        st = by_index.get(step["index"])
        if broken_at is not None or st is None or st.get("start") is None:
            why = f"{NOT_RUN}the worker stopped during step '{broken_at}'" if broken_at else \
                f"{NOT_RUN}the worker ended before this step ({exit_description})"
            if broken_at is None and not results and stopped is None:
                # the worker died before its first step (vLLM failed to import, the interpreter is
                # broken): a crash, with the whole log, and no step of this variant ran
                results.append(StepResult(step["name"], 0, Outcome.FAILED, failure_class=FailureClass.CRASH,
                                          message=f"{NEVER_STARTED} ({exit_description})",
                                          log_tail=log_slice(log, 0)))
                broken_at = step["name"]
                continue
            results.append(StepResult(step["name"], 0, Outcome.SKIPPED, message=why, classname=step.get("classname")))
            continue
        if "end" not in st:
            results.append(_unfinished(step, st, log, stopped, exit_description, st.get("current_phase")))
            broken_at = step["name"]
        else:
            results.append(_finished(step, st, log))
        if results[-1].outcome is not Outcome.SKIPPED:
            text = log_slice(log, st["start"].get("log_offset", 0), ends[step["index"]], limit=logfacts.MAX_BYTES)
            results[-1].log_facts = logfacts.read(text)
    return info, results


class _Steps:
    """One worker's events gathered per step (by ``index``), one handler per event name."""

    def __init__(self) -> None:
        self.info: dict[str, Any] = {}
        self.by_index: dict[int, dict[str, Any]] = {}

    def add(self, ev: dict[str, Any]) -> None:
        """One event, handed to its ``on_<name>`` handler under its step."""
        if ev.get("event") == vocab.WORKER_START:
            self.info = ev.get("info", {})
            return
        if "index" not in ev:
            return
        self.st = self.by_index.setdefault(ev["index"], {"phases": {}, "memory": [], "actions": [], "start": None})
        vocab.dispatch(self, ev)
        if ev.get("event") != vocab.ENGINE_FREED:  # it may come during a later step: not this one's doing
            self.st["last_t"] = ev["t"]

    def on_step_start(self, ev: dict[str, Any]) -> None:
        self.st.update(start=ev, t0=ev["t"])

    def on_phase_start(self, ev: dict[str, Any]) -> None:
        self.st["current_phase"] = ev["phase"]

    def on_phase_end(self, ev: dict[str, Any]) -> None:
        st = self.st  # summed: a pytest suite's test may build several engines
        st["phases"][ev["phase"]] = round(st["phases"].get(ev["phase"], 0.0) + ev["duration_s"], 6)
        if ev["phase"] == str(Phase.CONSTRUCT):  # what follows uses the engine (a test's body has no phase events)
            st["current_phase"] = str(Phase.WORKLOAD)

    def on_memory(self, ev: dict[str, Any]) -> None:
        if ev.get("probe_disagreement_bytes", 0) > self.st.get("disagreement", (0, ""))[0]:
            self.st["disagreement"] = (ev["probe_disagreement_bytes"], ev["label"])  # the step's largest
        self.st["memory"].append(MemorySample(ev["label"], ev["t"], ev["used_bytes"], ev["total_bytes"],
                                              [int(u) for u in ev.get("per_device") or []]))
        if "build" in ev:
            _build(self.st, ev)["memory"][ev["label"]] = ev["used_bytes"]

    def on_action(self, ev: dict[str, Any]) -> None:
        self.st["actions"].append({k: ev[k] for k in ("name", "duration_s", "used_bytes", "ok", "error")})
        if "build" in ev:
            _build(self.st, ev)["actions"][ev["name"]] = ev["duration_s"]

    def on_engine_start(self, ev: dict[str, Any]) -> None:
        _build(self.st, ev).update({k: v for k, v in ev.items() if k not in _EVENT_KEYS})

    on_engine_end = on_engine_start

    def on_engine_freed(self, ev: dict[str, Any]) -> None:
        """An engine of this step is gone, maybe during a later step (results/freed.py)."""
        (_build(self.st, ev) if "build" in ev else self.st)["freed_at"] = ev.get("freed_at")

    def on_threshold(self, ev: dict[str, Any]) -> None:
        self.st["threshold"] = ev["threshold_bytes"]

    def on_step_end(self, ev: dict[str, Any]) -> None:
        self.st["end"] = ev


_EVENT_KEYS = vocab.COMMON_KEYS | vocab.PLACE_KEYS


def _build(st: dict, ev: dict) -> dict[str, Any]:
    """One engine build of a test (events tagged ``build``), in build order."""
    builds = st.setdefault("builds", {})
    return builds.setdefault(ev["build"], {"build": ev["build"], "memory": {}, "actions": {}})


def _log_ends(plan_steps: list[dict], by_index: dict[int, dict]) -> dict[int, int | None]:
    """Where each started step's part of the log ends: where the next started step's begins (None: the end)."""
    starts = [(s["index"], by_index[s["index"]]["start"].get("log_offset", 0)) for s in plan_steps
              if (by_index.get(s["index"]) or {}).get("start")]
    return {index: starts[i + 1][1] if i + 1 < len(starts) else None for i, (index, _) in enumerate(starts)}


def _base(step: dict, st: dict) -> dict[str, Any]:
    return {"step": step["name"], "repeat": 0, "phases": st["phases"], "memory": st["memory"],
            "actions": st["actions"], "threshold_bytes": st.get("threshold"), "classname": step.get("classname"),
            "engine_process": st["start"].get("engine_process"),
            "probe_disagreement": st.get("disagreement"),
            "builds": [b for _, b in sorted(st.get("builds", {}).items())]}


def _freed_at(st: dict) -> float | None:
    """When the step's engine object was freed (a test's: the last of its builds; None while one
    still lived when the worker ended)."""
    builds = [b for b in st.get("builds", {}).values() if "after_construct" in b["memory"]]
    if not builds:
        return st.get("freed_at")
    times = [b.get("freed_at") for b in builds]
    return None if any(t is None for t in times) else max(times)


def _finished(step: dict, st: dict, log: Path) -> StepResult:
    end = st["end"]
    outcome = Outcome(end["outcome"])
    res = StepResult(outcome=outcome, duration_s=end["t"] - st["t0"],
                     expectations=[Expectation(**e) for e in end.get("expectations", [])],
                     release_latency_s=end.get("release_latency_s"),
                     release_after_free_s=end.get("release_after_free_s"), wait_s=end.get("wait_s"),
                     live_engine_built_by=str(end.get("live_engine_built_by") or ""),
                     engine_followed="wait_s" in end, engine_freed_at=_freed_at(st), ended_at=end["t"],
                     **_base(step, st))
    if outcome is Outcome.SKIPPED:  # a pytest suite's skipped test
        res.message = end.get("message", "")
    if outcome is Outcome.FAILED:
        res.phase = Phase(end["phase"]) if end.get("phase") else None
        res.message = f"{end.get('error_type', 'Error')}: {end.get('message', '')}"
        res.traceback = end.get("traceback", "")
        res.log_tail = log_slice(log, st["start"].get("log_offset", 0), end.get("log_offset"))
        res.failure_class = classify.classify_step(res.phase, end.get("error_type", ""), end.get("message", ""),
                                                   res.traceback, res.log_tail)
        if res.failure_class is FailureClass.CRASH:
            res.message = _with_signal_note(res.message)  # an engine process killed under the step
    return res


_NOT_THE_STEPS_DOING = {"interrupted": "not finished: the run was interrupted",
                        "disk_full": "not finished: the disk filled up, and the run stopped"}


def _unfinished(step: dict, st: dict, log: Path, stopped: str | None, exit_description: str,
                phase: str | None) -> StepResult:
    start = st.get("start") or {}
    tail = log_slice(log, start.get("log_offset", 0))
    if stopped == "timeout":
        cls, msg = FailureClass.TIMEOUT, f"Timeout: step exceeded {step['timeout_s']:g} s in phase {phase}"
    elif stopped in _NOT_THE_STEPS_DOING:  # the run is marked incomplete instead
        return StepResult(step["name"], 0, Outcome.SKIPPED, message=_NOT_THE_STEPS_DOING[stopped], log_tail=tail,
                          classname=step.get("classname"))
    else:
        cls = FailureClass.CRASH
        msg = _with_signal_note(f"WorkerDied: the worker process died ({exit_description}) in phase {phase}")
    duration = (st.get("last_t", 0) - st.get("t0", 0)) if st.get("t0") else 0.0
    if stopped == "timeout":  # it ran until the runner stopped it, not just until its last event
        duration = max(duration, float(step["timeout_s"]))
    return StepResult(outcome=Outcome.FAILED, failure_class=cls, phase=Phase(phase) if phase else None,
                      message=msg, log_tail=tail, duration_s=max(0.0, duration), **_base(step, st))
