"""Time writing one variant's JUnit file (results/junit.py: every text made XML-safe, indented,
written through the atomic writer) for N steps, each with a log tail and every fifth with a failure.

    python bench/bench_junit_write.py [--cases N] [--runs R]

The runner rewrites a variant's file after every worker, so this cost is paid once per (variant,
repeat) of a run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.model import FailureClass, MemorySample, Outcome, Phase, StepResult, VariantResult  # noqa: E402
from harness.results import junit  # noqa: E402


def steps(n: int) -> list[StepResult]:
    out = []
    for i in range(n):
        failed = i % 5 == 0
        out.append(StepResult(
            f"step_{i}", 0, Outcome.FAILED if failed else Outcome.PASSED,
            FailureClass.VRAM_CONSTRUCTION if failed else FailureClass.NONE, Phase.CONSTRUCT if failed else None,
            "ValueError: Free memory on device cuda:0 ..." if failed else "",
            "Traceback (most recent call last):\n  File ...\n" * 10 if failed else "",
            "INFO \x1b[32mengine\x1b[0m line\n" * 40, 1.0, {"construct": 0.5, "teardown": 0.1}, [],
            [MemorySample("before_construct", 0.0, 1 << 30, 64 << 30), MemorySample("after_construct", 0.0, 2 << 30, 64 << 30)]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    vr = VariantResult("a", "fixed", steps(args.cases), {}, [], "ok")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "a.xml"
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            junit.write_variant(path, "bench", [vr], 1, {"scenario": "bench"})
            times.append(time.perf_counter() - start)
        size = path.stat().st_size
    print(f"write_variant: {args.cases} cases, {size / 1e6:.1f} MB; median of {args.runs}: "
          f"{statistics.median(times) * 1000:.0f} ms (min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f})")


if __name__ == "__main__":
    main()
