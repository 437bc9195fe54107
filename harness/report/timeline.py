"""Device-memory timelines of a run, one per variant, for the HTML report's charts.

Built from ``events.jsonl`` (every ``memory`` sample, phase, teardown action and step end, with
wall-clock times). A variant's repeats ran in separate workers one after another; their segments
are laid end to end, so the x axis is seconds of that variant's own run time.

When a run directory has no events (only JUnit files were downloaded from CI, say), an approximate
timeline is rebuilt from the JUnit case properties (``mem_*_bytes`` and the phase durations).

The ``gpu_memory_utilization`` threshold: vLLM refuses to start unless ``util × total`` is free,
i.e. unless used memory is at most ``(1 - util) × total``. The worker reports it as the ``threshold``
event after a construction; for a step whose construction failed it comes from the step's engine
arguments in the worker plan (``logs/<variant>-r<N>.plan.json``).

A worker that hangs or dies sends no more events; the runner's JUnit time for that step says how
long it really ran before it was stopped (``ran``), so the chart goes on to that moment instead of
ending at the last event seconds earlier.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from harness import events as vocab
from harness.results.rundir import RunResults

_PHASES = ("settle", "construct", "workload", "expect", "teardown")


@dataclass
class Point:
    t: float
    used: int
    label: str
    step: int  # position of the step in the variant's timeline (0-based, over repeats)


@dataclass
class Span:
    start: float
    end: float
    phase: str
    step: int


@dataclass
class ActionMark:
    t: float
    used: int | None
    name: str
    ok: bool
    error: str
    step: int


@dataclass
class StepMark:
    pos: int  # 0-based position in this timeline
    index: int  # the step's index in the scenario
    name: str
    repeat: int
    start: float
    end: float
    outcome: str  # passed | failed | unfinished
    phase: str  # where it failed
    message: str
    fail_t: float | None  # where the failure is marked
    threshold: int | None  # used bytes allowed for the next engine to start
    events_end: float | None = None  # an unfinished step: its last event, when it ran on past it


@dataclass
class Timeline:
    variant: str
    total: int | None = None
    duration: float = 0.0
    points: list[Point] = field(default_factory=list)
    spans: list[Span] = field(default_factory=list)
    actions: list[ActionMark] = field(default_factory=list)
    steps: list[StepMark] = field(default_factory=list)
    repeats: list[tuple[float, int]] = field(default_factory=list)  # (start, repeat) of each worker
    source: str = "events"  # or "junit" (approximate)

    @property
    def peak(self) -> int:
        return max((p.used for p in self.points), default=0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- from events
def from_results(results: RunResults, variants: Iterable[str],
                 ran: dict[str, dict[tuple[str, int], float]] | None = None) -> dict[str, Timeline]:
    """One timeline per variant that has events, from a run directory read once (results/rundir.py);
    variants without events are left out. ``ran``: variant -> (step, repeat) -> seconds the step
    ran, from JUnit."""
    out = {}
    for v in variants:
        mine = [e for e in results.events if e.get("variant") == v]
        if mine:
            out[v] = from_events(v, mine, results.utilizations.get(v, {}), (ran or {}).get(v))
    return out


def from_events(variant: str, events: list[dict[str, Any]],
                utils: dict[int, dict[int, float]] | None = None,
                ran: dict[tuple[str, int], float] | None = None) -> Timeline:
    utils = utils or {}
    tl = Timeline(variant)
    segments: dict[int, list[dict]] = {}
    for ev in events:
        segments.setdefault(int(ev.get("repeat") or 0), []).append(ev)
    offset = 0.0
    for repeat in sorted(segments, key=lambda r: segments[r][0]["t"]):
        seg = segments[repeat]
        t0 = seg[0]["t"]
        tl.repeats.append((offset, repeat))
        end = _segment(tl, seg, offset - t0, repeat, utils.get(repeat, {}), ran or {})
        offset = max(offset, end)
    tl.duration = offset
    return tl


def _segment(tl: Timeline, seg: list[dict], shift: float, repeat: int, utils: dict[int, float],
             ran: dict[tuple[str, int], float]) -> float:
    """Add one worker's events to ``tl``; return the segment's end on the timeline."""
    first_pos = len(tl.steps)
    pos_of: dict[int, int] = {}
    open_phase: dict[tuple[int, str], float] = {}
    total = None
    last_t = seg[0]["t"] + shift
    threshold_ev: dict[int, int] = {}
    for ev in seg:
        t = ev["t"] + shift
        last_t = max(last_t, t)
        kind = ev.get("event")
        if kind == vocab.WORKER_START:
            total = (ev.get("info") or {}).get("total_bytes") or total
            continue
        if "index" not in ev:
            continue
        index = int(ev["index"])
        if kind == vocab.STEP_START:
            pos_of[index] = len(tl.steps)
            tl.steps.append(StepMark(len(tl.steps), index, str(ev.get("step", "")), repeat, t, t, "unfinished",
                                     "", "", None, None))
            continue
        pos = pos_of.get(index)
        if pos is None:
            continue
        st = tl.steps[pos]
        st.end = max(st.end, t)
        if kind == vocab.MEMORY:
            total = ev.get("total_bytes") or total
            tl.points.append(Point(t, int(ev.get("used_bytes") or 0), str(ev.get("label", "")), pos))
        elif kind == vocab.PHASE_START:
            open_phase[(pos, ev.get("phase", ""))] = t
            st.phase = str(ev.get("phase", ""))
        elif kind == vocab.PHASE_END:
            phase = str(ev.get("phase", ""))
            start = open_phase.pop((pos, phase), t - float(ev.get("duration_s") or 0.0))
            tl.spans.append(Span(start, t, phase, pos))
        elif kind == vocab.ACTION:
            used = ev.get("used_bytes")
            tl.actions.append(ActionMark(t, None if used is None else int(used), str(ev.get("name", "")),
                                         bool(ev.get("ok", True)), str(ev.get("error") or ""), pos))
        elif kind == vocab.THRESHOLD:
            threshold_ev[pos] = int(ev.get("threshold_bytes") or 0)
        elif kind == vocab.STEP_END:
            st.outcome = str(ev.get("outcome", ""))
            if st.outcome == "failed":
                st.phase = str(ev.get("phase") or st.phase)
                st.message = f"{ev.get('error_type') or 'Error'}: {ev.get('message', '')}"
                # mark the failure where its phase ended (a failed construction, before the teardown)
                ends = [s.end for s in tl.spans if s.step == pos and s.phase == st.phase]
                st.fail_t = ends[-1] if ends else t
            else:
                st.phase = ""
    for st in tl.steps[first_pos:]:
        stopped = st.start + ran.get((st.name, repeat), 0.0)
        if st.outcome == "unfinished" and stopped > last_t:
            st.events_end = last_t  # the last sign of life; nothing is known after it
            last_t = stopped
    for (pos, phase), start in open_phase.items():  # the worker hung or died inside this phase
        tl.spans.append(Span(start, last_t, phase, pos))
    for st in tl.steps[first_pos:]:
        if st.outcome == "unfinished":
            st.end = max(st.end, last_t) if st is tl.steps[-1] else st.end
            st.fail_t = st.end
            st.message = st.message or f"the step did not finish (worker stopped or died during {st.phase or 'it'})"
    if total:
        tl.total = max(tl.total or 0, int(total))
    for st in tl.steps[first_pos:]:
        if st.pos in threshold_ev:
            st.threshold = threshold_ev[st.pos]
        elif total:
            util = utils.get(st.index)
            if util is not None:
                st.threshold = int(round((1.0 - util) * total))
    _fill_thresholds(tl.steps[first_pos:])
    tl.spans.sort(key=lambda s: s.start)
    return last_t


def _fill_thresholds(steps: list[StepMark]) -> None:
    """A step with no known threshold takes its neighbour's (same engine settings, most likely)."""
    known = None
    for st in steps:
        known = st.threshold if st.threshold is not None else known
        if st.threshold is None:
            st.threshold = known
    known = None
    for st in reversed(steps):
        known = st.threshold if st.threshold is not None else known
        if st.threshold is None:
            st.threshold = known


# --------------------------------------------------------------------------- from JUnit (approximate)
def from_cases(variant: str, cases: list[Any]) -> Timeline:
    """A timeline rebuilt from JUnit case properties, for run directories without events: samples are
    placed by the recorded phase and action durations, so the shape is right and the times approximate."""
    tl = Timeline(variant, source="junit")
    t = 0.0
    for pos, case in enumerate(cases):
        props = dict(case.properties)
        start = t
        outcome = case.outcome.value
        st = StepMark(pos, pos, case.name, 0, start, start, "passed" if outcome == "passed" else outcome,
                      props.get("phase", ""), case.message, None, _int(props.get("threshold_bytes")))
        tl.steps.append(st)
        if outcome == "skipped":
            continue
        mems = {k[4:-6]: _int(v) for k, v in props.items() if k.startswith("mem_") and k.endswith("_bytes")}
        for phase in _PHASES:
            if phase == "teardown":
                break
            dur = _float(props.get(f"{phase}_s"))
            if dur is None:
                continue
            if phase == "construct" and "before_construct" in mems:
                tl.points.append(Point(t, mems["before_construct"], "before_construct", pos))
            tl.spans.append(Span(t, t + dur, phase, pos))
            t += dur
            label = f"after_{phase}"
            if label in mems:
                tl.points.append(Point(t, mems[label], label, pos))
            if phase == st.phase:
                st.fail_t = t
        teardown_start = t
        for key, value in props.items():
            if key.startswith("action_") and key.endswith("_s"):
                name = key[7:-2]
                t += _float(value) or 0.0
                used = mems.get(f"after_{name}")
                if used is not None:
                    tl.points.append(Point(t, used, f"after_{name}", pos))
                tl.actions.append(ActionMark(t, used, name, True, "", pos))
        if t > teardown_start:
            tl.spans.append(Span(teardown_start, t, "teardown", pos))
        t = max(t, start + case.time)
        st.end = t
        if st.outcome == "failed" and st.fail_t is None:
            st.fail_t = t
    tl.duration = t
    tl.repeats = [(0.0, 0)]
    _fill_thresholds(tl.steps)
    return tl


def _int(v: Any) -> int | None:
    try:
        return int(float(v))
    except (TypeError, ValueError):
        return None


def _float(v: Any) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None
