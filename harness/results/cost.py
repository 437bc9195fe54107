"""What a teardown costs: seconds waiting for memory (JUnit ★ `wait_s`), per variant and per case.

`wait_s` is the time a step or test spent in memory waits: the profile's `wait_memory` and `sleep`
actions before its construction and in its teardown (and a `call:` that uses `wait_memory`), and in
a pytest suite also the time inside upstream's own wait helpers. Per variant, summary.json's
`teardown_cost` has the total, the median and the mean per test, and for each candidate what it
costs per test more than the baseline ("the fix costs X s per test"). `diff` lists the cases whose
wait grew by more than a limit (seconds and a factor) as slower teardowns.
"""

from __future__ import annotations

import statistics
from typing import Any, Iterable

from harness.results import freed

DEFAULT_WAIT_REGRESSION_S = 10.0
DEFAULT_WAIT_FACTOR = 2.0


def wait_of(props: dict[str, str]) -> float | None:
    return freed.time_of(props, "wait_s")


def teardown_cost(cases: dict[str, list[Any]], baseline: str) -> dict[str, dict[str, Any]]:
    """variant -> {total_s, median_s, per_test_s, n[, vs_baseline_per_test_s]}; ``cases``: variant ->
    junitread.Case list. Variants whose file records no wait (a foreign JUnit) are left out."""
    out: dict[str, dict[str, Any]] = {}
    for variant, cs in cases.items():
        waits = [w for w in (wait_of(c.properties) for c in cs if c.outcome.value != "skipped") if w is not None]
        if waits:
            total = sum(waits)
            out[variant] = {"total_s": round(total, 6), "median_s": round(statistics.median(waits), 6),
                            "per_test_s": round(total / len(waits), 6), "n": len(waits)}
    base = out.get(baseline)
    for variant, c in out.items():
        if base is not None and variant != baseline:
            c["vs_baseline_per_test_s"] = round(c["per_test_s"] - base["per_test_s"], 6)
    return out


def describe(variant: str, c: dict[str, Any], baseline: str) -> str:
    """One line: "with_fix: waited 24.0 s in all, median 3.0 s over 8 tests; the fix costs 3.0 s per test"."""
    line = (f"{variant}: waited {c['total_s']:.1f} s in all, median {c['median_s']:.1f} s over {c['n']} "
            f"test(s)")
    if "vs_baseline_per_test_s" in c:
        line += f"; the fix costs {c['vs_baseline_per_test_s']:.1f} s per test against {baseline}"
    return line


def slower(pairs: Iterable[tuple[str, dict[str, str] | None, dict[str, str] | None]],
           seconds: float = DEFAULT_WAIT_REGRESSION_S, factor: float = DEFAULT_WAIT_FACTOR) -> list[dict[str, Any]]:
    """Cases whose wait grew by more than ``seconds`` and to more than ``factor`` times the
    baseline's; ``pairs``: (label, baseline properties, candidate properties)."""
    out = []
    for label, a, b in pairs:
        wa = wait_of(a) if a is not None else None
        wb = wait_of(b) if b is not None else None
        if wb is None:
            continue
        before = wa or 0.0
        if wb - before > seconds and wb > factor * before:
            out.append({"case": label, "baseline_s": wa, "candidate_s": wb})
    return out


def format_slower(found: list[dict[str, Any]], seconds: float, factor: float) -> str:
    if not found:
        return ""
    lines = [f"slower teardowns (wait grew by more than {seconds:g} s and {factor:g}x):"]
    lines += [f"  {c['case']}: {'-' if c['baseline_s'] is None else format(c['baseline_s'], '.2f')} s -> "
              f"{c['candidate_s']:.2f} s" for c in found]
    return "\n".join(lines) + "\n"
