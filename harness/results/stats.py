"""Failure rates with Wilson intervals, and Fisher's exact test. Standard library only.

Repeats of a flaky leak give counts like 3/10 against 0/10; these two tools say how sure we can be
that the difference is real rather than luck.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from dataclasses import dataclass

Z95 = 1.959963984540054  # the standard normal's 97.5th percentile


@dataclass(frozen=True)
class Rate:
    """``k`` events in ``n`` trials, with a Wilson score interval."""

    k: int
    n: int
    low: float
    high: float

    @property
    def rate(self) -> float:
        return self.k / self.n if self.n else 0.0

    def to_dict(self) -> dict[str, float | int]:
        return {"k": self.k, "n": self.n, "rate": self.rate, "low": self.low, "high": self.high}


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k/n; (0, 1) when nothing was observed.

    Unlike the normal approximation it stays inside [0, 1] and is not degenerate at 0/n or n/n,
    which are exactly the counts a fix produces.
    """
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p, z2 = k / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # The bounds are exact at the edges; floating point would leave 1e-17 crumbs there.
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return low, high


def rate(k: int, n: int) -> Rate:
    return Rate(k, n, *wilson(k, n))


def fisher_exact(table: list[list[int]] | tuple) -> float:
    """Two-sided p-value of Fisher's exact test for [[a, b], [c, d]], as ``scipy.stats.fisher_exact``.

    The p-value sums the probabilities of every table with the same margins that is no more likely
    than the observed one (within a relative 1e-7, scipy's tolerance for ties). The hypergeometric
    weights are exact integers (``math.comb``), so there is no rounding until the final division.
    """
    (a, b), (c, d) = table
    if min(a, b, c, d) < 0:
        raise ValueError(f"table entries must be >= 0: {table}")
    row1, col1, total = a + b, a + c, a + b + c + d
    if 0 in (row1, c + d, col1, b + d):
        return 1.0  # a zero margin: every table with these margins is the observed one

    def weight(x: int) -> int:  # proportional to P(top-left cell = x) given the margins
        return math.comb(col1, x) * math.comb(total - col1, row1 - x)

    bound = weight(a) * (10**7 + 1)  # w <= observed * (1 + 1e-7), kept in integers
    lo, hi = max(0, row1 + col1 - total), min(row1, col1)
    extreme = sum(w for w in map(weight, range(lo, hi + 1)) if w * 10**7 <= bound)
    return min(1.0, extreme / math.comb(total, row1))


# ----------------------------------------------------------------------------- repeated looks
def obrien_fleming_spent(t: float, alpha: float) -> float:
    """Lan-DeMets O'Brien-Fleming-type alpha spending: the share of ``alpha`` spent by information
    fraction ``t`` (0..1). It spends almost nothing early, so an early stop needs overwhelming
    evidence, and most of ``alpha`` is left for the last look."""
    if t <= 0:
        return 0.0
    z = NormalDist().inv_cdf(1 - alpha / 2)
    return min(alpha, 2 * (1 - NormalDist().cdf(z / math.sqrt(min(t, 1.0)))))


def look_level(look: int, looks: int, alpha: float) -> float:
    """The nominal level of Fisher's test at look ``look`` of ``looks`` (1-based): the alpha this
    look spends. The levels of all looks add up to ``alpha``, so by the union bound the chance of a
    false rejection at any look stays at most ``alpha`` (Bonferroni over the looks: no assumption
    about how the looks' p-values depend on each other, which Fisher's discrete test would need)."""
    if not 1 <= look <= looks:
        raise ValueError(f"need 1 <= look <= looks, got {look} of {looks}")
    return obrien_fleming_spent(look / looks, alpha) - obrien_fleming_spent((look - 1) / looks, alpha)


@dataclass(frozen=True)
class Look:
    """What one look at the data decided for one candidate against the baseline."""

    decided: bool
    reason: str  # "fails", "significant", "futile" or "" (not decided yet)
    p: float
    level: float


def look(base: tuple[int, int], cand: tuple[int, int], *, look_no: int, looks: int, per_round: int,
         alpha: float) -> Look:
    """Whether the comparison of VRAM failure counts ``(k, n)`` is decided at look ``look_no``.

    - ``fails``: the candidate has a VRAM failure: the verdict is `fix insufficient` whatever the
      remaining repeats show (no statistics involved);
    - ``significant``: Fisher's p is under this look's level (alpha spending above);
    - ``futile``: even if every remaining baseline case failed and no candidate case did, the last
      look could not reach significance.
    ``per_round`` is the cases one repeat adds to each side (the steps of one worker)."""
    (bk, bn), (ck, cn) = base, cand
    p = fisher_exact([[bk, bn - bk], [ck, cn - ck]])
    level = look_level(look_no, looks, alpha)
    if ck > 0:
        return Look(True, "fails", p, level)
    if bk > 0 and p < level:
        return Look(True, "significant", p, level)
    more = (looks - look_no) * per_round
    best = fisher_exact([[bk + more, bn - bk], [ck, cn + more - ck]])
    if best >= look_level(looks, looks, alpha):
        return Look(True, "futile", p, level)
    return Look(False, "", p, level)
