"""The teardown's cost and the leaks of a run, as table rows every renderer shares (report.md,
report.html, `run.py report --leaks`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.device import GIB

if TYPE_CHECKING:
    from harness.results.summary import RunSummary

MAX_LEAK_ROWS = 200

COST_HEADER = ["variant", "tests", "total wait", "median wait", "per test", "against the baseline"]
LEAK_HEADER = ["variant", "test", "device", "left behind", "what held it"]


def cost_rows(s: RunSummary) -> list[list[str]]:
    rows = []
    for variant, c in s.teardown_cost.items():
        against = c.get("vs_baseline_per_test_s")
        rows.append([variant, str(c["n"]), f"{c['total_s']:.2f} s", f"{c['median_s']:.2f} s",
                     f"{c['per_test_s']:.2f} s",
                     "baseline" if variant == s.baseline else
                     "-" if against is None else f"the fix costs {against:+.2f} s per test"])
    return rows


def leak_rows(s: RunSummary) -> list[list[str]]:
    return [[leak["variant"], leak["test"], str(leak["device"]), f"{leak['residue_bytes'] / GIB:.2f} GiB",
             leak.get("status") or "not recorded"] for leak in s.leaks]


LEAKS_NOTE = ("memory still held after a test's teardown, above what it held before its first construction, "
              "whether or not a later construction failed")
