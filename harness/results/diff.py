"""Compare two sets of JUnit cases, keyed on (classname, name): what got fixed, what regressed."""

from __future__ import annotations

import enum
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

from harness.results import cost, culprit
from harness.results.junitread import Case, read_cases
from harness.model import Outcome
from harness.xmlsafe import printable


class Transition(str, enum.Enum):
    REGRESSION = "regression"  # passed in the baseline, fails in the candidate
    STILL_FAILING = "still failing"
    FIXED = "fixed"
    NOT_PROVEN = "not proven"  # failed in the baseline, passed in the candidate without building an engine
    NEW = "new"  # only in the candidate
    GONE = "gone"  # only in the baseline
    SKIPPED = "skipped"  # skipped on either side: nothing to compare
    UNCHANGED = "unchanged"  # passed on both sides

    def __str__(self) -> str:
        return self.value


#: Declaration order is the order people want to read them in: the interesting ones first.
ORDER = {t: i for i, t in enumerate(Transition)}


@dataclass(frozen=True)
class CaseDiff:
    key: tuple[str, str]
    transition: Transition
    baseline: Case | None
    candidate: Case | None

    @property
    def label(self) -> str:
        classname, name = self.key
        return f"{classname}::{name}" if classname else name


@dataclass
class DiffResult:
    cases: list[CaseDiff]
    baseline: str = "baseline"
    candidate: str = "candidate"
    counts: Counter = field(init=False)

    def __post_init__(self) -> None:
        self.counts = Counter(c.transition for c in self.cases)

    def of(self, *transitions: Transition) -> list[CaseDiff]:
        return [c for c in self.cases if c.transition in transitions]


def transition(base: Case | None, cand: Case | None) -> Transition:
    if base is None:
        return Transition.NEW
    if cand is None:
        return Transition.GONE
    if Outcome.SKIPPED in (base.outcome, cand.outcome):
        return Transition.SKIPPED
    if base.failed:
        if cand.failed:
            return Transition.STILL_FAILING
        return Transition.NOT_PROVEN if cand.engines_built == 0 else Transition.FIXED
    return Transition.REGRESSION if cand.failed else Transition.UNCHANGED


def diff(baseline_cases: Iterable[Case], candidate_cases: Iterable[Case],
         baseline: str = "baseline", candidate: str = "candidate") -> DiffResult:
    """Cases in baseline order, then the candidate's new ones in its order."""
    base = {c.key: c for c in baseline_cases}
    cand = {c.key: c for c in candidate_cases}
    rows = [CaseDiff(k, transition(b, cand.get(k)), b, cand.get(k)) for k, b in base.items()]
    rows += [CaseDiff(k, Transition.NEW, None, c) for k, c in cand.items() if k not in base]
    return DiffResult(rows, baseline, candidate)


def diff_files(a: str | os.PathLike, b: str | os.PathLike) -> DiffResult:
    return diff(read_cases(a), read_cases(b), str(a), str(b))


def _side(case: Case | None) -> str:
    if case is None:
        return "-"
    if case.failed:
        return f"failed ({case.failure_class})"
    return str(case.outcome)


def summary_line(result: DiffResult) -> str:
    parts = [f"{result.counts[t]} {t}" for t in Transition if result.counts[t]]
    return f"{len(result.cases)} cases: " + (", ".join(parts) if parts else "none")


def slower_teardowns(result: DiffResult, seconds: float = cost.DEFAULT_WAIT_REGRESSION_S,
                     factor: float = cost.DEFAULT_WAIT_FACTOR) -> list[dict[str, Any]]:
    """Cases whose wait for memory grew past the limit (results/cost.py)."""
    return cost.slower(_property_pairs(result), seconds, factor)


def _property_pairs(result: DiffResult) -> list[tuple[str, dict | None, dict | None]]:
    """(label, baseline properties, candidate properties) of every case."""
    return [(r.label, r.baseline.properties if r.baseline else None, r.candidate.properties if r.candidate else None)
            for r in result.cases]


def format_table(result: DiffResult, only_changes: bool = False,
                 wait_limit: tuple[float, float] = (cost.DEFAULT_WAIT_REGRESSION_S, cost.DEFAULT_WAIT_FACTOR)) -> str:
    """Aligned columns, interesting transitions first; ``only_changes`` drops passed→passed rows."""
    rows = sorted(result.cases, key=lambda c: ORDER[c.transition])  # stable: file order within a group
    if only_changes:
        rows = [r for r in rows if r.transition is not Transition.UNCHANGED]
    table = [("transition", "case", "baseline", "candidate")]
    table += [(str(r.transition), printable(r.label), _side(r.baseline), _side(r.candidate)) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[3] for row in table]
    return ("\n".join(line.rstrip() for line in lines) + "\n" + summary_line(result) + "\n"
            + culprit.format_residue(residues(result))
            + cost.format_slower(slower_teardowns(result, *wait_limit), *wait_limit))


def residues(result: DiffResult) -> list[dict[str, Any]]:
    """Which steps' engines held a different amount after their teardown (results/culprit.py)."""
    return culprit.residue_changes(_property_pairs(result))


def _side_json(case: Case | None) -> dict[str, Any] | None:
    if case is None:
        return None
    return {"outcome": case.outcome.value, "failure_class": case.failure_class.value,
            "message": case.message, "time": case.time}


def to_json(result: DiffResult, wait_regression_s: float = cost.DEFAULT_WAIT_REGRESSION_S,
            wait_factor: float = cost.DEFAULT_WAIT_FACTOR) -> dict[str, Any]:
    return {
        "version": 1,
        "baseline": result.baseline,
        "candidate": result.candidate,
        "counts": {t.value: result.counts[t] for t in Transition},
        "cases": [{"classname": r.key[0], "name": r.key[1], "transition": r.transition.value,
                   "baseline": _side_json(r.baseline), "candidate": _side_json(r.candidate)}
                  for r in result.cases],
        "residue": residues(result),
        "slower_teardowns": slower_teardowns(result, wait_regression_s, wait_factor),
    }

