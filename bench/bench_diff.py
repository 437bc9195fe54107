"""Time ``diff_files`` on two 10 000-case JUnit files, parsing included, and the whole
``run.py diff`` command (interpreter start and table output included).

    python bench/bench_diff.py [--cases N] [--runs R]

The files look like the harness's own: per-case properties, a traceback in every failure and a log
tail in system-err, so parsing costs what it costs on real runs. A second pair in plain pytest
style (no ``failure_class`` property) also exercises the classifier, when it is installed.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from junitparser import Failure, JUnitXml, Properties, Property, Skipped, TestCase, TestSuite

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.results.diff import diff_files  # noqa: E402
from harness.results.junitread import read_cases  # noqa: E402

VRAM = ("ValueError: Free memory on device cuda:0 (24.68/255.98 GiB) on startup is less than desired "
        "GPU memory utilization (0.9, 230.39 GiB). Decrease GPU memory utilization or reduce GPU memory "
        "used by other processes.")
TRACEBACK = ("Traceback (most recent call last):\n"
             '  File "harness/worker.py", line 140, in construct\n    llm = backend.construct(args)\n'
             '  File "vllm/v1/worker/utils.py", line 312, in request_memory\n    raise ValueError(\n') + VRAM
LOG_TAIL = "\n".join(f"INFO 06-12 03:19:{i:02d} [core.py:{100 + i}] engine message {i}" for i in range(20))


def write_file(path: Path, variant: str, n: int, fail_rate: float, seed: int, harness_style: bool) -> None:
    rng = random.Random(seed)
    suite = TestSuite(variant)
    suite.add_property("scenario", "bench")
    cases = []
    for i in range(n):
        case = TestCase(f"step_{i:05d}[{i % 10}]", classname="bench", time=round(rng.uniform(1, 60), 3))
        failed = rng.random() < fail_rate
        if harness_style:
            props = Properties()
            for name, value in (("failure_class", "vram_construction" if failed else "none"),
                                ("phase", "construct"), ("construct_s", f"{rng.uniform(5, 40):.6f}"),
                                ("mem_before_construct_bytes", str(rng.randrange(2**38))),
                                ("mem_after_construct_bytes", str(rng.randrange(2**38)))):
                props.add_property(Property(name, value))
            case.append(props)
        if failed:
            failure = Failure(VRAM, "vram_construction" if harness_style else None)
            failure.text = TRACEBACK
            case.result = [failure]
            case.system_err = LOG_TAIL
        elif rng.random() < 0.01:
            case.result = [Skipped("needs 2 GPUs")]
        cases.append(case)
    suite.add_testcases(cases)  # once: add_testcase recounts the whole suite on every call
    xml = JUnitXml()
    xml.add_testsuite(suite)
    xml.write(str(path))


def time_diff(a: Path, b: Path, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        gc.collect()  # start each run from the same heap, not with the last run's garbage
        t0 = time.perf_counter()
        result = diff_files(a, b)
        times.append(time.perf_counter() - t0)
        assert result.cases
        del result  # freeing 20 000 cases is not part of the next run's time
    return times


def report(label: str, a: Path, b: Path, runs: int) -> None:
    times = time_diff(a, b, runs)
    parse = statistics.median(_timed(read_cases, a) for _ in range(runs))
    result = diff_files(a, b)
    print(f"{label}: {a.stat().st_size / 1e6:.1f} MB + {b.stat().st_size / 1e6:.1f} MB, "
          f"{len(result.cases)} cases; diff_files median of {runs}: {statistics.median(times) * 1000:.0f} ms "
          f"(min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f}); "
          f"parsing one file: {parse * 1000:.0f} ms")
    print("  " + " ".join(f"{k}={v}" for k, v in sorted(result.counts.items())))
    argv = [sys.executable, str(ROOT / "run.py"), "diff", str(a), str(b)]
    cli = [_timed(subprocess.run, argv, stdout=subprocess.DEVNULL) for _ in range(runs)]
    print(f"  python run.py diff (whole command) median of {runs}: {statistics.median(cli) * 1000:.0f} ms "
          f"(max {max(cli) * 1000:.0f}; target < 1000)")


def _timed(fn, *args, **kwargs) -> float:
    t0 = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        a, b = Path(tmp, "baseline.xml"), Path(tmp, "candidate.xml")
        write_file(a, "no_fix", args.cases, 0.20, 1, harness_style=True)
        write_file(b, "with_fix", args.cases, 0.01, 2, harness_style=True)
        report("harness-style", a, b, args.runs)
        try:
            from harness.results import classify  # noqa: F401
        except ImportError:
            print("pytest-style: skipped (harness.results.classify is not installed)")
            return 0
        write_file(a, "no_fix", args.cases, 0.20, 1, harness_style=False)
        write_file(b, "with_fix", args.cases, 0.01, 2, harness_style=False)
        report("pytest-style (classifier on every failure)", a, b, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
