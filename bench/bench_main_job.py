"""The quick start's main job on this machine: `run.py scenarios/sampler_mi250.yaml`, rehearsed on
vLLM-CPU under the modelled MI250 GCD. Prints the wall time, the verdict, and where the time went
(construction, workload, teardown and its waits) per variant, from the run's events.
Target: under 3 minutes on a 2-core machine. Usage: python bench/bench_main_job.py [--out DIR] [--tail N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="results directory (default: a temporary one)")
    ap.add_argument("--scenario", default=str(ROOT / "scenarios/sampler_mi250.yaml"))
    ap.add_argument("--tail", type=int, default=0, metavar="N", help="also print the run's last N lines of output")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="bench-main-job-"))
    start = time.monotonic()
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), args.scenario, "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True)
    wall = time.monotonic() - start
    (run_dir,) = [p for p in out.glob("*/*") if p.is_dir()]
    summary = json.loads((run_dir / "summary.json").read_text())
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    phases: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    span: dict[str, list[float]] = {}
    for e in events:
        v = e["variant"]
        span.setdefault(v, [e["t"], e["t"]])[1] = e["t"]
        if e["event"] == "phase_end":
            phases[v][e["phase"]] += e["duration_s"]
        elif e["event"] == "action" and e["name"] == "wait_memory":
            phases[v]["(of which wait_memory)"] += e["duration_s"]
    if args.tail:  # what a user sees at the end of the run
        print("\n".join(proc.stdout.splitlines()[-args.tail:]) + "\n")
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())} ({os.cpu_count()} cores)")
    print(f"wall time: {wall:.1f} s   verdict: {summary['verdict']}   exit: {proc.returncode}")
    for v, ph in phases.items():
        print(f"  {v}: steps {span[v][1] - span[v][0]:.1f} s after its worker started; " + ", ".join(f"{k} {s:.1f} s" for k, s in ph.items()))
    return 0 if summary["verdict"] == "fix confirmed" else 1


if __name__ == "__main__":
    sys.exit(main())
