"""Time the reports of a run directory (summary.json, report.md, report.html and the history line:
what ``run.py report RUN_DIR`` writes before it prints the console table) on two variants of N
harness-style cases each, JUnit only (no events, as when the files were downloaded from CI), and
count how often the JUnit files are parsed.

    python bench/bench_report.py [--cases N] [--runs R] [--tree PATH]

``--tree`` times another checkout of the harness (e.g. the main branch) on the same files.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_diff import write_file  # noqa: E402

#: runs in the timed tree: the report command, with the JUnit parser counted
CHILD = """
import sys, time, xml.etree.ElementTree as ET
import junitparser.junitparser as jp
parses = [0]
real = ET.parse
def counted(*a, **k):
    parses[0] += 1
    return real(*a, **k)
ET.parse = jp.etree.parse = counted
real_iter = ET.iterparse
def counted_iter(*a, **k):
    parses[0] += 1
    return real_iter(*a, **k)
ET.iterparse = counted_iter
try:
    from harness.pipeline import report as write
except ImportError:  # an older tree: the reports were written from ci/history.py or report/summary.py
    from harness.ci import history
    from harness.report import summary
    write = getattr(history, "write_report", None) or summary.write  # before: summary.write appended the history
t = time.perf_counter()
code = write(sys.argv[1])["exit_code"]
print("RESULT", time.perf_counter() - t, parses[0], code, file=sys.stderr)
"""


def make_run(run_dir: Path, n: int) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({
        "version": 1, "scenario": "bench", "run_id": run_dir.name, "baseline": "base", "variants": ["base", "fix"],
        "repeat": 1, "incomplete": False, "started": "2025-06-12T03:14:07+00:00", "backend": "sim",
        "platform": "rocm", "substitutions": [], "orphans": []}))
    write_file(run_dir / "base.xml", "base", n, 0.3, 1, True)
    write_file(run_dir / "fix.xml", "fix", n, 0.02, 2, True)


def time_tree(tree: Path, run_dir: Path, runs: int) -> tuple[float, int]:
    seconds, parses = [], 0
    for _ in range(runs):
        env = {**os.environ, "PYTHONPATH": str(tree), "HARNESS_HISTORY": str(run_dir.parent / "history.jsonl")}
        out = subprocess.run([sys.executable, "-c", CHILD, str(run_dir)], env=env, capture_output=True, text=True,
                             cwd=tree)
        line = next(ln for ln in out.stderr.splitlines() if ln.startswith("RESULT"))
        _, s, parses, _code = line.split()
        seconds.append(float(s))
    return statistics.median(seconds), int(parses)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=5000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tree", type=Path, action="append", default=[])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "bench" / "20250612-031407-ab12"
        make_run(run_dir, args.cases)
        print(f"run.py report on 2 variants x {args.cases} cases (median of {args.runs}):")
        for tree in [ROOT, *args.tree]:
            seconds, parses = time_tree(tree.resolve(), run_dir, args.runs)
            print(f"  {tree}: {seconds:.2f} s, {parses} XML parses of the 2 JUnit files")


if __name__ == "__main__":
    main()
