"""Stop repeating once the verdict is decided (``repeat: N`` runs round by round).

A round is one repeat of every variant. After each round, every candidate is compared with the
baseline (harness.results.stats.look): decided when it has a VRAM failure (`fix insufficient`
whatever follows), when Fisher's test is significant at the level alpha spending gives this look,
or when the remaining rounds could no longer make it significant. The run stops when every
candidate is decided. The verdict then tests at the level of the last look taken, so the chance of
a false `fix confirmed` over all looks stays under ALPHA. ``--no-early-stop`` runs all N rounds and
tests at ALPHA, as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.model import FailureClass, Outcome, VariantResult
from harness.results import stats

ALPHA = 0.05  # the verdict's (results/verdict.py)
RULE = "O'Brien-Fleming-type alpha spending over Fisher's exact test, Bonferroni over the looks"


def vram_counts(results: list[VariantResult]) -> tuple[int, int]:
    """(VRAM construction failures, cases that ran) over a variant's finished workers."""
    steps = [s for vr in results for s in vr.steps if s.outcome is not Outcome.SKIPPED]
    return sum(s.outcome is Outcome.FAILED and s.failure_class is FailureClass.VRAM_CONSTRUCTION
               for s in steps), len(steps)


@dataclass
class EarlyStop:
    baseline: str
    candidates: list[str]
    rounds: int  # N, the scenario's repeat count
    per_round: int  # steps of one worker
    alpha: float = ALPHA
    looks: list[dict[str, Any]] = field(default_factory=list)
    stopped_after: int | None = None

    @classmethod
    def applies(cls, variants: list[str], baseline: str, rounds: int, sharded: bool) -> bool:
        """Only a whole run of a baseline and candidates, repeated, has anything to stop early."""
        return rounds > 1 and not sharded and baseline in variants and len(variants) > 1

    def after_round(self, round_no: int, counts: dict[str, tuple[int, int]]) -> bool:
        """Look at the (VRAM failures, cases) of each variant after round ``round_no`` (1-based);
        True when the run should stop."""
        base = counts.get(self.baseline, (0, 0))
        decisions = {c: stats.look(base, counts.get(c, (0, 0)), look_no=round_no, looks=self.rounds,
                                   per_round=self.per_round, alpha=self.alpha) for c in self.candidates}
        self.looks.append({"round": round_no, "level": stats.look_level(round_no, self.rounds, self.alpha),
                           "candidates": {c: {"p": d.p, "decided": d.reason or None} for c, d in decisions.items()}})
        if round_no < self.rounds and all(d.decided for d in decisions.values()):
            self.stopped_after = round_no
            return True
        return False

    @property
    def level(self) -> float:
        """The level the verdict tests at: that of the last look taken."""
        return self.looks[-1]["level"] if self.looks else self.alpha

    def record(self) -> dict[str, Any]:
        """run.json's ``sequential`` entry (results/summary.py hands ``level`` to the verdict)."""
        return {"rule": RULE, "alpha": self.alpha, "rounds_planned": self.rounds,
                "rounds_run": len(self.looks), "stopped_after": self.stopped_after, "level": self.level,
                "looks": self.looks}
