"""Flakiness across nights: `run.py trend SCENARIO --flaky`, from history.jsonl.

A test is flaky when its outcome changes between runs of the same code: same vLLM build (version and
commit) and same checkout (`checkout_ref`, a pytest suite's tests) — a change between two revisions
may be a fix or a regression, not a flake. Per (scenario, variant, test) over the window of nights:

- flip rate: outcome changes between consecutive runs (by start time) of one revision, over the
  consecutive pairs there were; the runs behind it are those of revisions that ran at least twice;
- failure rate: runs in which it failed, over the runs in which it ran.

A test with fewer than `min_runs` runs behind its flip rate is marked `too few runs` and not ranked.
Records written before `checkout_ref` existed read as one checkout. A record's test ran once per
run; with `repeat: N` a run where any repeat failed counts as failed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

DEFAULT_MIN_RUNS = 5


@dataclass(frozen=True)
class FlakyTest:
    scenario: str
    variant: str
    test: str
    runs: int  # runs in which it ran: behind the failure rate
    failures: int
    flip_runs: int  # runs of revisions that ran at least twice: behind the flip rate
    flips: int
    pairs: int  # consecutive runs of one revision
    revisions: int
    enough: bool  # flip_runs >= min_runs: ranked

    @property
    def flip_rate(self) -> float | None:
        return self.flips / self.pairs if self.pairs else None

    @property
    def failure_rate(self) -> float | None:
        return self.failures / self.runs if self.runs else None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "flip_rate": self.flip_rate, "failure_rate": self.failure_rate,
                "too_few_runs": not self.enough}


def revision(rec: dict[str, Any]) -> tuple[str, str, str]:
    """The code a record ran: vLLM version, vLLM commit, checkout commit."""
    return tuple(str(rec.get(k) or "") for k in ("vllm_version", "vllm_commit", "checkout_ref"))  # type: ignore[return-value]


def _when(rec: dict[str, Any]) -> tuple[str, str]:
    return str(rec.get("date") or rec.get("night") or ""), str(rec.get("run_id") or "")


def flaky(records: list[dict[str, Any]], scenario: str | None = None, nights: int | None = None,
          min_runs: int = DEFAULT_MIN_RUNS) -> list[FlakyTest]:
    """Every test of the window, ranked ones first (flip rate, then failure rate, highest first),
    then those with too few runs."""
    recs = [r for r in records if scenario is None or r["scenario"] == scenario]
    if nights is not None:
        window = set(sorted({str(r["night"]) for r in recs})[-nights:])
        recs = [r for r in recs if str(r["night"]) in window]
    # (scenario, variant, test) -> revision -> outcomes in time order (True: failed)
    seqs: dict[tuple[str, str, str], dict[tuple[str, str, str], list[bool]]] = {}
    for rec in sorted(recs, key=_when):
        for test, st in rec["steps"].items():
            if not isinstance(st, dict) or int(st.get("runs", 0)) <= 0:
                continue  # never ran in this run (skipped): no outcome
            key = (str(rec["scenario"]), str(rec["variant"]), str(test))
            seqs.setdefault(key, {}).setdefault(revision(rec), []).append(int(st.get("failed", 0)) > 0)
    out = []
    for (sc, variant, test), per_rev in seqs.items():
        outcomes = [o for seq in per_rev.values() for o in seq]
        flips = sum(a != b for seq in per_rev.values() for a, b in zip(seq, seq[1:]))
        pairs = sum(len(seq) - 1 for seq in per_rev.values())
        flip_runs = sum(len(seq) for seq in per_rev.values() if len(seq) > 1)
        out.append(FlakyTest(sc, variant, test, len(outcomes), sum(outcomes), flip_runs, flips, pairs,
                             len(per_rev), flip_runs >= min_runs))
    return sorted(out, key=lambda f: (not f.enough, -(f.flip_rate or 0.0), -(f.failure_rate or 0.0),
                                      f.scenario, f.variant, f.test))

