"""Wilson intervals and Fisher's exact test against published values (scipy, R, statsmodels)."""

from __future__ import annotations

import math

import pytest

from harness.results import stats


@pytest.mark.parametrize("table, p", [
    ([[8, 2], [1, 5]], 0.034965034965034),  # scipy.stats.fisher_exact
    ([[7, 0], [0, 7]], 0.000582750582750583),
    ([[6, 2], [1, 4]], 0.10256410256410256),  # scipy's documentation example
    ([[3, 1], [1, 3]], 0.4857142857142857),  # R: fisher.test(TeaTasting)
    ([[1, 9], [11, 3]], 0.0027594561852200836),  # scipy's lady-tasting example, transposed
    ([[10, 0], [0, 10]], 2 / 184756),  # the two extreme tables, each 1/C(20, 10)
    ([[5, 5], [5, 5]], 1.0),
])
def test_fisher_known_values(table, p):
    assert stats.fisher_exact(table) == pytest.approx(p, rel=1e-9)


def test_fisher_is_symmetric_under_transposition_and_row_swap():
    t = [[12, 3], [4, 9]]
    p = stats.fisher_exact(t)
    assert stats.fisher_exact([[12, 4], [3, 9]]) == pytest.approx(p, rel=1e-12)
    assert stats.fisher_exact([[4, 9], [12, 3]]) == pytest.approx(p, rel=1e-12)


def test_fisher_sums_tied_tables_like_scipy():
    # [[2, 2], [2, 2]]: the tables x=1 and x=3 are exactly as likely as each other and less likely
    # than the observed one; all five tables count, so p is 1.
    assert stats.fisher_exact([[2, 2], [2, 2]]) == 1.0
    # x=0 and x=4 (each 1/70) tie: both count, along with nothing else
    assert stats.fisher_exact([[4, 0], [0, 4]]) == pytest.approx(2 / 70, rel=1e-12)


def test_fisher_degenerate_margins():
    assert stats.fisher_exact([[0, 0], [0, 0]]) == 1.0
    assert stats.fisher_exact([[0, 10], [0, 10]]) == 1.0  # nobody failed anywhere
    assert stats.fisher_exact([[3, 0], [5, 0]]) == 1.0


def test_fisher_large_counts_stay_exact_and_fast():
    p = stats.fisher_exact([[300, 700], [0, 1000]])
    assert 0 < p < 1e-90
    assert math.isfinite(p)


def test_fisher_rejects_negative_counts():
    with pytest.raises(ValueError):
        stats.fisher_exact([[-1, 2], [3, 4]])


@pytest.mark.parametrize("k, n, low, high", [
    (0, 10, 0.0, 0.27753279986288),  # statsmodels proportion_confint(0, 10, method="wilson")
    (10, 10, 0.72246720013712, 1.0),
    (5, 10, 0.23659309051256, 0.76340690948744),
])
def test_wilson_known_values(k, n, low, high):
    lo, hi = stats.wilson(k, n)
    assert lo == pytest.approx(low, abs=1e-10)
    assert hi == pytest.approx(high, abs=1e-10)


@pytest.mark.parametrize("k, n", [(1, 1), (3, 10), (7, 30), (1, 200)])
def test_wilson_bounds_solve_the_score_equation(k, n):
    # The Wilson bounds are the p where the score statistic equals z: (k/n - p)^2 = z^2 p (1 - p) / n.
    z = stats.Z95
    for p in stats.wilson(k, n):
        if 0 < p < 1:
            assert (k / n - p) ** 2 == pytest.approx(z * z * p * (1 - p) / n, rel=1e-9)
    # at the edges the closed forms are simple
    assert stats.wilson(n, n)[0] == pytest.approx(n / (n + z * z), rel=1e-12)
    assert stats.wilson(0, n)[1] == pytest.approx(z * z / (n + z * z), rel=1e-12)


def test_wilson_edges_are_exact_and_inside_unit_interval():
    assert stats.wilson(0, 10)[0] == 0.0
    assert stats.wilson(10, 10)[1] == 1.0
    assert stats.wilson(0, 0) == (0.0, 1.0)
    for n in range(1, 40):
        for k in range(n + 1):
            lo, hi = stats.wilson(k, n)
            assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_wilson_rejects_impossible_counts():
    with pytest.raises(ValueError):
        stats.wilson(11, 10)


def test_rate_object():
    r = stats.rate(3, 10)
    assert r.rate == 0.3
    assert r.to_dict() == {"k": 3, "n": 10, "rate": 0.3, "low": r.low, "high": r.high}
    assert stats.rate(0, 0).rate == 0.0
