"""Who held the memory: the culprit of a `vram_construction` failure.

The failing step is innocent: its engine could not be built because an earlier engine's memory was
still held. The culprit is the earliest earlier engine build (a YAML step, an upstream test) whose
memory had not come back to its pre-construction level by the failing construction: none of the
readings from its teardown up to the failing step's `before_construct` was within a tolerance of
that level. What it still held after each of its teardown actions, and the first reading at which
it was finally free (if one came), say how the teardown failed.

Everything comes from memory readings in order, as the JUnit properties hold them
(`mem_before_construct_bytes`, `mem_after_construct_bytes`, `mem_after_<action>_bytes`), so YAML
steps, upstream pytest suites and the modelled device are judged the same way. The readings of one
worker process form one sequence (a repeat, or an upstream session); sequences never mix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from harness.device import GIB
from harness.model import FailureClass, Outcome
from harness.results.freed import status as freed_status
from harness.results.freed import time_of

MIN_TOLERANCE = 64 << 20  # allocator noise between two readings of an idle device
TOLERANCE_SHARE = 0.05  # of what the engine build took
_MEM = re.compile(r"^mem_(.+)_bytes$")
_NOT_ACTIONS = ("before_construct", "after_construct", "after_workload")


@dataclass(frozen=True)
class Build:
    """One step's (or test's) readings in time order: [(label, used bytes)]; ``vram`` if its
    construction failed for lack of memory."""

    name: str
    readings: tuple[tuple[str, int], ...]
    vram: bool = False
    followed: bool = False  # the worker followed its engine's life: freed_at means something
    freed_at: float | None = None  # epoch seconds its engine object was freed (None: never)
    at: float | None = None  # epoch seconds of its construction (or the wait before it)

    def reading(self, label: str) -> int | None:
        return next((b for lab, b in self.readings if lab == label), None)


@dataclass(frozen=True)
class Culprit:
    step: str
    held_bytes_after: dict[str, int]  # its teardown action -> bytes still held above its starting level
    freed_after: dict[str, str] | None  # {"step": NAME, "at": LABEL}: first reading where it was free
    status: str | None = None  # at the failing construction: results/freed.py (None: not known)

    def to_dict(self) -> dict[str, Any]:
        out = {"step": self.step, "held_bytes_after": dict(self.held_bytes_after), "freed_after": self.freed_after}
        if self.status is not None:
            out["status"] = self.status
        return out

    def describe(self) -> str:
        """One line for people: "culprit: s1 (held 58.88 GiB after del_llm, ...; never freed)"."""
        held = ", ".join(f"{b / GIB:.2f} GiB after {a}" for a, b in self.held_bytes_after.items()) or "no teardown readings"
        if self.freed_after is None:
            freed = "still held after its worker's last step"
        else:
            at = self.freed_after["at"].removeprefix("after_")
            freed = f"free only at {self.freed_after['step']}'s {at}"
        status = f"; at the failure: {self.status}" if self.status else ""
        return f"culprit: {self.step} (held {held}; {freed}{status})"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Culprit":
        return cls(str(d["step"]), {str(k): int(v) for k, v in d.get("held_bytes_after", {}).items()},
                   d.get("freed_after"), d.get("status"))


def readings_from_properties(props: dict[str, str]) -> tuple[tuple[str, int], ...]:
    out = []
    for name, value in props.items():  # properties keep the order they were recorded in
        m = _MEM.match(name)
        if m:
            try:
                out.append((m.group(1), int(float(value))))
            except ValueError:
                continue  # a foreign file's odd value: no reading
    return tuple(out)


def tolerance(built_bytes: float) -> int:
    """What may stay behind after a teardown of an engine whose build took `built_bytes`."""
    return max(MIN_TOLERANCE, int(TOLERANCE_SHARE * built_bytes))


def _tolerance(build: Build) -> int:
    before, after = build.reading("before_construct"), build.reading("after_construct")
    return tolerance(max(0, (after or 0) - (before or 0)))


def _teardown(build: Build) -> list[tuple[str, int]]:
    """The readings after the engine was built: the teardown actions (and an injected lazy release)."""
    labels = [lab for lab, _ in build.readings]
    start = labels.index("after_construct") + 1 if "after_construct" in labels else len(labels)
    return [(lab, b) for lab, b in build.readings[start:] if lab not in _NOT_ACTIONS]


def find(builds: Sequence[Build], failing: int) -> Culprit | None:
    """The culprit of ``builds[failing]``'s failed construction, from the builds before it (one
    process's sequence); None when no earlier build's memory was still held."""
    victim = builds[failing]
    for j in range(failing):
        build = builds[j]
        before, built = build.reading("before_construct"), build.reading("after_construct")
        if before is None or built is None:
            continue  # no engine was built here
        free_at = before + _tolerance(build)
        # every reading from this build's teardown to the failing construction, then the rest
        window = [(build.name, lab, v) for lab, v in _teardown(build)]
        window += [(b.name, lab, v) for b in builds[j + 1:failing] for lab, v in b.readings]
        pre = []
        for lab, v in victim.readings:  # its settle actions, then its before_construct
            pre.append((victim.name, lab, v))
            if lab == "before_construct":
                break
        rest = [(victim.name, lab, v) for lab, v in victim.readings[len(pre):]] + _after(builds, failing)
        if any(v <= free_at for _, _, v in window + pre):
            continue  # it had come back by the failing construction
        freed = next(({"step": n, "at": lab} for n, lab, v in rest if v <= free_at), None)
        held = {lab.removeprefix("after_"): max(0, v - before) for lab, v in _teardown(build)}
        status = freed_status(build.freed_at, victim.at) if build.followed and victim.at is not None else None
        return Culprit(build.name, held, freed, status)
    return None


def _after(builds: Sequence[Build], failing: int) -> list[tuple[str, str, int]]:
    return [(b.name, lab, v) for b in builds[failing + 1:] for lab, v in b.readings]


def find_all(builds: Sequence[Build]) -> dict[int, Culprit]:
    """Culprits of every VRAM-failed build of one sequence, by index."""
    out = {}
    for i, b in enumerate(builds):
        if b.vram:
            found = find(builds, i)
            if found is not None:
                out[i] = found
    return out


def from_cases(cases: Iterable[Any], repeats: int = 1) -> dict[tuple[str, str], Culprit]:
    """Culprits of a JUnit file's VRAM failures, keyed by case (classname, name). One sequence per
    worker process: per suite and ``variant`` property (pytest's --junitxml holds every variant in
    one suite), then by the ``repeat`` property, or the ``[r]`` suffix when the run repeated. Not
    by classname: an upstream suite's tests in several modules run in one process."""
    sequences: dict[tuple[str, str], list[Any]] = {}
    for c in cases:
        repeat = c.properties.get("repeat")
        if repeat is None and repeats > 1:
            m = re.search(r"\[(\d+)\]$", c.name)
            repeat = m.group(1) if m else "0"
        sequences.setdefault((c.suite, c.properties.get("variant", ""), str(repeat or 0)), []).append(c)
    out = {}
    for seq in sequences.values():
        builds = [_case_build(c) for c in seq]
        out.update({seq[i].key: cul for i, cul in find_all(builds).items()})
    return out


def _case_build(c: Any) -> Build:
    props = c.properties
    freed_at = time_of(props, "engine_freed_at")
    return Build(c.name, readings_from_properties(props), c.vram_failure, "engine_freed_at" in props, freed_at,
                 time_of(props, "construct_at"))


def step_readings(samples: Iterable[tuple[str, int]], builds: bool) -> tuple[tuple[str, int], ...]:
    """A step's readings as its JUnit properties keep them (``mem_<label>_bytes``), so the console, the
    JUnit file and summary.json name the same culprit. A pytest suite's test (``builds``) may build
    several engines (an HfRunner's model, then vLLM's): one reading per label, the last build's value
    in the label's first place; mixing the builds' sequences would read the first build's teardown
    as the engine's."""
    samples = tuple(samples)
    return tuple(dict(samples).items()) if builds else samples


def from_steps(steps: Iterable[Any]) -> dict[int, Culprit]:
    """Culprits within one worker's step results (harness.model.StepResult), by position."""
    builds = []
    for s in steps:
        at = s.construct_at()
        builds.append(Build(s.step, step_readings(((m.label, m.used_bytes) for m in s.memory), bool(s.builds)),
                            s.outcome is Outcome.FAILED and s.failure_class is FailureClass.VRAM_CONSTRUCTION,
                            s.engine_followed, s.engine_freed_at, at))
    return find_all(builds)


def properties(c: Culprit) -> dict[str, str]:
    """The failing case's JUnit properties naming its culprit."""
    props = {"culprit_step": c.step}
    props.update({f"culprit_held_after_{a}_bytes": str(b) for a, b in c.held_bytes_after.items()})
    props["culprit_freed_after"] = f"{c.freed_after['step']}:{c.freed_after['at']}" if c.freed_after else ""
    if c.status is not None:
        props["culprit_status"] = c.status
    return props


def residue(props: dict[str, str]) -> int | None:
    """Bytes a step's engine still held after its last teardown action, above its starting level."""
    build = Build("", readings_from_properties(props))
    before, teardown = build.reading("before_construct"), _teardown(build)
    if before is None or build.reading("after_construct") is None or not teardown:
        return None
    return max(0, teardown[-1][1] - before)


def residue_changes(pairs: Iterable[tuple[str, dict[str, str] | None, dict[str, str] | None]]
                    ) -> list[dict[str, Any]]:
    """For `diff`: the steps whose residue (held after the last teardown action) changed between two
    runs by more than the tolerance; ``pairs`` are (label, baseline properties, candidate properties)."""
    out = []
    for label, a, b in pairs:
        ra, rb = (residue(p) if p is not None else None for p in (a, b))
        if ra is None and rb is None:
            continue
        if ra is not None and rb is not None and abs(ra - rb) <= max(MIN_TOLERANCE, TOLERANCE_SHARE * max(ra, rb)):
            continue
        out.append({"case": label, "baseline_bytes": ra, "candidate_bytes": rb})
    return out


def format_residue(changes: list[dict[str, Any]]) -> str:
    if not changes:
        return ""
    def gib(b):
        return "-" if b is None else f"{b / GIB:.2f} GiB"
    lines = ["residue changed (device memory still held after the step's last teardown action):"]
    lines += [f"  {c['case']}: {gib(c['baseline_bytes'])} -> {gib(c['candidate_bytes'])}" for c in changes]
    return "\n".join(lines) + "\n"
