"""The run summary: the verdict of a run directory and what it rests on, typed and versioned.

`summarize` computes it from the `RunResults` of results/rundir.py (each JUnit file parsed once);
summary.json is its `to_json`, and `from_json` loads it back. Every report (console, report.md,
report.html, the history) renders one `RunSummary` and computes no verdict of its own.

A `RunSummary` is also a read-only mapping of its JSON form (``summary["exit_code"]``), so code written
against summary.json reads it unchanged. ``results`` (the parsed cases with their properties and log
tails, suite properties, engine builds) travels with a freshly built summary for the HTML page and
the history; it is not part of summary.json.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

from harness import RESULT_VERSION
from harness.errors import InfrastructureError, InputError
from harness.results import cost, culprit, gate, leaks
from harness.results import diff as diffs
from harness.results.rundir import RunResults, read_json
from harness.results.stats import Rate
from harness.results.verdict import ALPHA, StepCell, VerdictReport, evaluate, step_of

#: run.json keys copied into the summary as they are
PASSTHROUGH = ("scenario", "scenario_path", "run_id", "started", "finished", "backend", "platform", "rehearsal")


def _rate(d: dict[str, Any]) -> Rate:
    return Rate(int(d["k"]), int(d["n"]), float(d["low"]), float(d["high"]))


@dataclass(frozen=True)
class Candidate:
    verdict: str
    exit_code: int
    reasons: list[str]
    vram_failures: int
    regressions: list[str]
    fisher_p: float | None
    not_allowed: list[str] = field(default_factory=list)  # "step (class)": failures --allow did not accept

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "exit_code": self.exit_code, "reasons": list(self.reasons),
                "vram_failures": self.vram_failures, "regressions": list(self.regressions),
                "fisher_p": self.fisher_p, "not_allowed": list(self.not_allowed)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Candidate":
        return cls(d["verdict"], d["exit_code"], list(d["reasons"]), d["vram_failures"],
                   list(d["regressions"]), d.get("fisher_p"), list(d.get("not_allowed") or []))


@dataclass(frozen=True)
class Cell:
    """One step of one variant over its repeats."""

    outcome: str
    failure_class: str
    message: str
    time: float  # mean over the repeats that ran
    runs: int
    failed: int
    vram: Rate  # VRAM construction failures per run
    culprit: dict[str, Any] | None = None  # ★ a VRAM failure's {step, held_bytes_after: {action: bytes}, freed_after}

    def to_json(self) -> dict[str, Any]:
        out = {"outcome": self.outcome, "failure_class": self.failure_class, "message": self.message,
               "time": self.time, "runs": self.runs, "failed": self.failed, "vram": self.vram.to_dict()}
        if self.culprit is not None:
            out["culprit"] = self.culprit
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Cell":
        return cls(d["outcome"], d["failure_class"], d["message"], d["time"], d["runs"], d["failed"],
                   _rate(d["vram"]), d.get("culprit"))

    @classmethod
    def of(cls, cell: StepCell, culprit: dict[str, Any] | None = None) -> "Cell":
        c = cell.case
        return cls(c.outcome.value, c.failure_class.value, c.message, round(c.time, 6), cell.runs,
                   cell.failed, cell.vram, culprit)


@dataclass(frozen=True)
class Row:
    """One step, its cell in every variant that ran it."""

    classname: str
    step: str
    variants: dict[str, Cell]

    def to_json(self) -> dict[str, Any]:
        return {"classname": self.classname, "step": self.step,
                "variants": {v: c.to_json() for v, c in self.variants.items()}}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Row":
        return cls(d["classname"], d["step"], {v: Cell.from_json(c) for v, c in d["variants"].items()})


@dataclass(frozen=True)
class Fisher:
    table: list[list[int]]  # [[baseline failures, passes], [candidate failures, passes]]
    p: float | None

    def to_json(self) -> dict[str, Any]:
        return {"table": [list(r) for r in self.table], "p": self.p}


@dataclass(frozen=True)
class Stats:
    repeats: int
    alpha: float
    pooled_vram: dict[str, Rate]
    fisher: dict[str, Fisher]
    sequential: dict[str, Any] | None = None  # run.json's early-stopping record (run/earlystop.py)

    def to_json(self) -> dict[str, Any]:
        return {"repeats": self.repeats, "alpha": self.alpha,
                "pooled_vram": {v: r.to_dict() for v, r in self.pooled_vram.items()},
                "fisher": {v: f.to_json() for v, f in self.fisher.items()}, "sequential": self.sequential}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Stats":
        return cls(d["repeats"], d["alpha"], {v: _rate(r) for v, r in d["pooled_vram"].items()},
                   {v: Fisher([list(r) for r in f["table"]], f["p"]) for v, f in d["fisher"].items()},
                   d.get("sequential"))


@dataclass(frozen=True)
class TransitionRow:
    """One step, baseline → candidate (results/diff.py)."""

    classname: str
    step: str
    transition: str
    baseline: dict[str, Any] | None  # outcome, failure_class, message, time; None: not in that file
    candidate: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        return {"classname": self.classname, "step": self.step, "transition": self.transition,
                "baseline": self.baseline, "candidate": self.candidate}


@dataclass(frozen=True)
class Transitions:
    counts: dict[str, int]
    cases: list[TransitionRow]

    def to_json(self) -> dict[str, Any]:
        return {"counts": dict(self.counts), "cases": [c.to_json() for c in self.cases]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Transitions":
        return cls(dict(d["counts"]), [TransitionRow(**c) for c in d["cases"]])

    @classmethod
    def of(cls, d: diffs.DiffResult) -> "Transitions":
        out = diffs.to_json(d)
        return cls(out["counts"], [TransitionRow(c["classname"], c["name"], c["transition"], c["baseline"],
                                              c["candidate"]) for c in out["cases"]])


@dataclass(frozen=True, eq=False)
class RunSummary(Mapping):
    """What summary.json holds, field for field."""

    version: int
    scenario: str | None
    scenario_path: str | None
    run_id: str | None
    started: str | None
    finished: str | None
    backend: str | None
    platform: str | None
    baseline: str
    variants: list[str]
    repeat: int
    incomplete: bool
    verdict: str
    exit_code: int
    reasons: list[str]
    candidates: dict[str, Candidate]
    missing: list[str]
    counts: dict[str, dict[str, Any]]  # variant -> {"cases", "passed", "failed", "skipped", "classes": {...}}
    cases: list[Row]
    stats: Stats
    transitions: dict[str, Transitions]  # candidate -> baseline → candidate per step
    substitutions: list[Any]
    orphans: list[Any]
    rehearsal: bool | None = None  # the machine lacked the scenario's platform
    allow: list[str] = field(default_factory=list)  # failure classes --allow accepted
    #: ★ memory tests left behind: {test, variant, device, residue_bytes[, status, classname]}, largest first
    leaks: list[dict[str, Any]] = field(default_factory=list)
    #: variant -> {total_s, median_s, per_test_s, n[, vs_baseline_per_test_s]}: seconds in memory waits
    teardown_cost: dict[str, dict[str, Any]] = field(default_factory=dict)
    probe_notes: list[str] = field(default_factory=list)  # where the two probes of a device disagreed
    #: the parsed run directory this summary was computed from; None when loaded from summary.json
    results: RunResults | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version, "scenario": self.scenario, "scenario_path": self.scenario_path,
            "run_id": self.run_id, "started": self.started, "finished": self.finished, "backend": self.backend,
            "platform": self.platform, "baseline": self.baseline, "variants": list(self.variants),
            "repeat": self.repeat, "incomplete": self.incomplete, "verdict": self.verdict,
            "exit_code": self.exit_code, "reasons": list(self.reasons),
            "candidates": {v: c.to_json() for v, c in self.candidates.items()},
            "missing": list(self.missing), "counts": json.loads(json.dumps(self.counts)),
            "cases": [r.to_json() for r in self.cases], "stats": self.stats.to_json(),
            "transitions": {v: t.to_json() for v, t in self.transitions.items()},
            "substitutions": list(self.substitutions), "orphans": list(self.orphans),
            "rehearsal": self.rehearsal, "allow": list(self.allow),
            "leaks": [dict(leak) for leak in self.leaks],
            "teardown_cost": {v: dict(c) for v, c in self.teardown_cost.items()},
            "probe_notes": list(self.probe_notes),
        }

    @classmethod
    def from_json(cls, d: Any, source: str = "summary.json") -> "RunSummary":
        if not isinstance(d, dict):
            raise InputError(f"{source}: expected a JSON object")
        version = d.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= RESULT_VERSION:
            raise InputError(f"{source}: version: unsupported {version!r}, this release reads 1 to {RESULT_VERSION}")
        try:
            return cls(
                version=version, **{k: d.get(k) for k in PASSTHROUGH}, baseline=d["baseline"],
                variants=list(d["variants"]), repeat=d["repeat"], incomplete=bool(d["incomplete"]),
                verdict=d["verdict"], exit_code=d["exit_code"], reasons=list(d["reasons"]),
                candidates={v: Candidate.from_json(c) for v, c in d["candidates"].items()},
                missing=list(d["missing"]), counts=d["counts"], cases=[Row.from_json(r) for r in d["cases"]],
                stats=Stats.from_json(d["stats"]),
                transitions={v: Transitions.from_json(t) for v, t in d["transitions"].items()},
                substitutions=list(d.get("substitutions") or []), orphans=list(d.get("orphans") or []),
                allow=list(d.get("allow") or []), leaks=[dict(leak) for leak in d.get("leaks") or []],
                teardown_cost={str(v): dict(c) for v, c in (d.get("teardown_cost") or {}).items()},
                probe_notes=list(d.get("probe_notes") or []))
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise InputError(f"{source}: not a run summary: {type(e).__name__}: {e}") from None

    # ----------------------------------------------------------------- the read-only mapping view
    @functools.cached_property
    def _json(self) -> dict[str, Any]:
        return self.to_json()

    def __getitem__(self, key: str) -> Any:
        return self._json[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._json)

    def __len__(self) -> int:
        return len(self._json)


def load(path: Path) -> RunSummary:
    """A summary.json read back."""
    path = Path(path)
    return RunSummary.from_json(read_json(path), str(path))


def summarize(results: RunResults, allow: frozenset | None = None) -> RunSummary:
    """The verdict of a parsed run directory, and everything summary.json says about it.
    ``allow``: failure classes accepted (--allow); None: run.json's."""
    run = results.run
    baseline, repeats, incomplete = run["baseline"], run["repeat"], run["incomplete"]
    if allow is None:
        allow = gate.parse_allow(run.get("allow") if isinstance(run.get("allow"), list) else [],
                                 where=f"{results.run_dir / 'run.json'}: allow")
    sequential = _sequential(run, results.run_dir / "run.json")
    alpha = sequential["level"] if sequential else ALPHA
    report = evaluate(results.cases, baseline, repeats, incomplete, alpha=alpha, allow=allow)
    culprits = {v: culprit.from_cases(cs, repeats) for v, cs in results.cases.items()}
    reasons = [f"variant {v!r} has no results (no {v}.xml)" for v in results.missing] + report.reasons
    problems = [str(p) for p in run.get("problems") or [] if p] if isinstance(run.get("problems"), list) else []
    reasons = [f"did not run as asked: {p}" for p in problems] + reasons
    # a pytest suite that could not be collected is the machine's problem, as `run` says it: exit 3
    exit_code = InfrastructureError.exit_code if problems else report.exit_code
    return RunSummary(
        version=RESULT_VERSION, **{k: run.get(k) for k in PASSTHROUGH}, baseline=baseline,
        variants=list(run["variants"]), repeat=repeats, incomplete=incomplete,
        verdict=report.verdict.value, exit_code=exit_code, reasons=reasons,
        candidates={name: Candidate(c.verdict.value, c.exit_code, c.reasons, c.vram_failures,
                                    c.regressions, c.fisher_p, c.not_allowed)
                    for name, c in report.candidates.items()},
        missing=list(results.missing), counts=report.counts,
        cases=[Row(row.key[0], row.step, {v: Cell.of(cell, _culprit_of(culprits.get(v, {}), row.key, repeats))
                                          for v, cell in row.cells.items()})
               for row in report.steps],
        stats=replace(_stats(report), alpha=alpha, sequential=sequential),
        transitions={name: _with_culprits(Transitions.of(c.diff), culprits, baseline, name, repeats)
                     for name, c in report.candidates.items()},
        substitutions=list(run.get("substitutions") or []), orphans=list(run.get("orphans") or []),
        allow=sorted(a.value for a in allow),
        leaks=leaks.from_cases((v, c) for v, cs in results.cases.items() for c in cs),
        teardown_cost=cost.teardown_cost(results.cases, baseline), probe_notes=_probe_notes(results.cases),
        results=results)


def _probe_notes(cases: dict[str, list]) -> list[str]:
    """One line per case whose two probes read more than 1 GiB apart (JUnit probe_disagreement_*)."""
    notes = []
    for variant, cs in cases.items():
        for c in cs:
            gap = c.properties.get("probe_disagreement_bytes")
            if gap:
                notes.append(f"{variant}: {c.name}: the device's two probes disagree by {int(gap) / 2**30:.2f} GiB "
                             f"(at {c.properties.get('probe_disagreement_at', '?')}); the first one's figures were used")
    return notes


def _sequential(run: dict[str, Any], path: Path) -> dict[str, Any] | None:
    """run.json's early-stopping record (run/earlystop.py), whose ``level`` the verdict tests at."""
    seq = run.get("sequential")
    if seq is None:
        return None
    level = seq.get("level") if isinstance(seq, dict) else None
    if not isinstance(level, (int, float)) or isinstance(level, bool) or not 0 <= level <= 1:
        raise InputError(f"{path}: sequential.level: expected a number in [0, 1], got {level!r}")
    return seq


def _culprit_of(found: dict, key: tuple[str, str], repeats: int) -> dict[str, Any] | None:
    """The culprit of a step's first VRAM failure over its repeats (culprit.from_cases keys cases
    by their own names, ``step[r]`` with repeats)."""
    for (classname, name), c in found.items():
        if classname == key[0] and step_of(name, repeats) == key[1]:
            return {**c.to_dict(), "step": step_of(c.step, repeats)}
    return None


def _with_culprits(t: Transitions, culprits: dict[str, dict], baseline: str, candidate: str,
                   repeats: int) -> Transitions:
    """Each failed side of a transition with its culprit, as the steps' cells have it."""
    def side(entry: dict[str, Any] | None, variant: str, key: tuple[str, str]) -> dict[str, Any] | None:
        found = _culprit_of(culprits.get(variant, {}), key, repeats) if entry and entry["outcome"] == "failed" else None
        return {**entry, "culprit": found} if found else entry

    return Transitions(t.counts, [replace(c, baseline=side(c.baseline, baseline, (c.classname, c.step)),
                                          candidate=side(c.candidate, candidate, (c.classname, c.step)))
                                  for c in t.cases])


def _stats(report: VerdictReport) -> Stats:
    base = report.pooled.get(report.baseline)
    fisher = {}
    if report.repeats > 1 and base is not None:
        for name, c in report.candidates.items():
            cand = report.pooled[name]
            fisher[name] = Fisher([[base.k, base.n - base.k], [cand.k, cand.n - cand.k]], c.fisher_p)
    return Stats(report.repeats, ALPHA, dict(report.pooled), fisher)
