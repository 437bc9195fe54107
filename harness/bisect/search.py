"""The bisection itself: a range of revisions and verdicts, nothing else (no git, no pip, no runs).

Revisions are indexes 0..n-1 from old to new. The user vouches for the ends: index 0 behaves the
old way (a regression search: passes), index n-1 the new way (fails). A verdict is OLD, NEW or SKIP
(the revision could not be built or run). The search asks for the revision halfway between the
last known OLD and the first known NEW; when that one is skipped it asks for its nearest neighbours
in turn (mozregression), so a skipped revision never stops the search.

The ends are taken on trust and run only when the answer rests on them, at the end: a search over
n revisions without skips needs at most ceil(log2(n - 1)) + 1 runs, and an answer never rests on an
end nobody ran (a "good" end that also fails, a "bad" end that passes, are reported as such).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field


class Behaviour(str, enum.Enum):
    """How one revision behaved: like the old end of the range, like the new one, or neither."""

    OLD = "old"    # behaves like the old end (regression search: good)
    NEW = "new"    # behaves like the new end (regression search: bad)
    SKIP = "skip"  # cannot be built or run; says nothing

    def __str__(self) -> str:
        return self.value


class Status(str, enum.Enum):
    FOUND = "found"                # one revision is the first NEW
    AMBIGUOUS = "ambiguous"        # skipped revisions hide which of `candidates` is the first NEW
    OLD_END_IS_NEW = "old end is new"  # the old end itself behaves the new way: nothing to bisect
    NEW_END_IS_OLD = "new end is old"  # the new end behaves the old way: nothing changed
    NO_VERDICT = "no verdict"      # every revision tested was skipped: the search found nothing

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Result:
    status: Status
    last_old: int | None = None
    first_new: int | None = None  # set when FOUND
    candidates: tuple[int, ...] = ()  # the revisions that may be the first NEW
    unverified: tuple[int, ...] = ()  # ends the answer rests on that could not be run (skipped)


@dataclass
class Bisection:
    n: int
    verdicts: dict[int, Behaviour] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.n < 2:
            raise ValueError("a bisection needs at least two revisions (the old and the new end)")

    def record(self, index: int, verdict: Behaviour) -> None:
        if not 0 <= index < self.n:
            raise IndexError(f"revision {index} is outside 0..{self.n - 1}")
        self.verdicts[index] = Behaviour(verdict)

    def bounds(self) -> tuple[int, int]:
        """(last OLD, first NEW) as far as known; the untested ends count as what the user said."""
        hi = min((i for i, v in self.verdicts.items() if v is Behaviour.NEW), default=self.n - 1)
        lo = max((i for i, v in self.verdicts.items() if v is Behaviour.OLD and i < hi), default=0)
        return lo, hi

    def _contradicted(self) -> Status | None:
        if self.verdicts.get(0) is Behaviour.NEW:
            return Status.OLD_END_IS_NEW
        if self.verdicts.get(self.n - 1) is Behaviour.OLD:
            return Status.NEW_END_IS_OLD
        return None

    def next(self) -> int | None:
        """The revision to test next, or None when the search is over."""
        if self._contradicted():
            return None
        lo, hi = self.bounds()
        untested = [i for i in range(lo + 1, hi) if i not in self.verdicts]
        if untested:
            mid = (lo + hi) // 2  # a skipped midpoint gives way to its nearest neighbours
            return min(untested, key=lambda i: (abs(i - mid), i))
        for end in (hi, lo):  # the answer rests on the ends: run them now that it does
            if end not in self.verdicts:
                return end
        return None

    def remaining(self) -> int:
        """How many more runs at most, if nothing more is skipped."""
        if self.next() is None:
            return 0
        lo, hi = self.bounds()
        ends = sum(1 for e in (lo, hi) if e not in self.verdicts)
        if hi - lo == 1:
            return ends
        # halving hi - lo, then at most one end: halving moves the other end onto a tested revision
        return math.ceil(math.log2(hi - lo)) + min(ends, 1)

    def result(self) -> Result:
        status = self._contradicted()
        if status is not None:
            return Result(status)
        if not any(v is not Behaviour.SKIP for v in self.verdicts.values()):
            # the ends only "count as what the user said" next to a real verdict; without one,
            # naming a revision would be the user's claim, not a finding
            return Result(Status.NO_VERDICT, candidates=tuple(range(1, self.n)))
        lo, hi = self.bounds()
        candidates = tuple(i for i in range(lo + 1, hi + 1) if self.verdicts.get(i) in (None, Behaviour.SKIP)
                           or i == hi)
        unverified = tuple(e for e in (lo, hi) if self.verdicts.get(e, Behaviour.SKIP) is Behaviour.SKIP)
        if len(candidates) == 1:
            return Result(Status.FOUND, lo, hi, candidates, unverified)
        return Result(Status.AMBIGUOUS, lo, None, candidates, unverified)


def max_runs(n: int) -> int:
    """At most this many runs find the first NEW among n revisions when nothing is skipped."""
    return Bisection(n).remaining()
