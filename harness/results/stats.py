"""Failure rates with Wilson intervals, and Fisher's exact test. Standard library only.

Repeats of a flaky leak give counts like 3/10 against 0/10; these two tools say how sure we can be
that the difference is real rather than luck.
"""

from __future__ import annotations

import math
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
