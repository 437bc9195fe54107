"""Scale-out with pytest-xdist: one scenario of eight variants on 1, 2 and 4 simulated devices.

    python bench/bench_xdist.py [--scenario scenarios/sim_parallel.yaml] [--construct-s S] [--workers 1 2 4]

For N workers the simulated node shows N devices (``CUDA_VISIBLE_DEVICES=0,...,N-1``) and pytest runs
``-n N --gpus-per-worker 1``: every (variant, repeat) runs in its own worker process on its worker's
device. The wall time is the whole pytest command's (start-up, collection and xdist's workers
included); the speedup is against one worker on one device, the target 0.9 x the workers.

The scenario's steps mostly wait (a 6 s engine construction is a sleep, as a real one mostly waits
on I/O, compilation and memory profiling), so N workers overlap even on a 2-core machine. A
CPU-bound scenario would be limited by the cores, not by the devices.

It also checks what each worker received: its own device, inside the outer list, the same step
outcomes at every N, and that asking for more workers than devices is refused.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from xml.etree import ElementTree

ROOT = Path(__file__).resolve().parent.parent


def run_pytest(scenario: Path, workers: int, devices: int, work: Path) -> tuple[float, int, str, Path]:
    xml = work / f"n{workers}.xml"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in range(devices))}
    for var in ("HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HARNESS_SIM_LEDGER"):
        env.pop(var, None)
    argv = [sys.executable, "-m", "pytest", str(scenario), "-q", "-n", str(workers), "--gpus-per-worker", "1",
            "--harness-out", str(work / f"results-n{workers}"), f"--junitxml={xml}", "-p", "no:cacheprovider"]
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    return time.perf_counter() - start, proc.returncode, proc.stdout + proc.stderr, xml


def read_junit(xml: Path) -> tuple[dict[str, str], dict[str, set[str]], float]:
    """Outcome per case, devices seen per xdist worker, and the summed step times (the serial work)."""
    outcomes: dict[str, str] = {}
    devices: dict[str, set[str]] = defaultdict(set)
    work = 0.0
    for case in ElementTree.parse(xml).getroot().iter("testcase"):
        key = f"{case.get('classname')}::{case.get('name')}"
        outcomes[key] = "failed" if case.find("failure") is not None else (
            "skipped" if case.find("skipped") is not None else "passed")
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        devices[props.get("xdist_worker", "?")].add(props.get("visible_devices", "?"))
        work += sum(float(v) for k, v in props.items() if re.fullmatch(r"(construct|workload|expect|teardown|settle)_s", k))
    return outcomes, devices, work


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", default=str(ROOT / "scenarios" / "sim_parallel.yaml"))
    parser.add_argument("--construct-s", type=float, help="override the scenario's sim.construct_s (a quicker check)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-xdist-") as tmp:
        work = Path(tmp)
        scenario = Path(args.scenario).resolve()
        if args.construct_s is not None:
            text = re.sub(r"construct_s: [0-9.]+", f"construct_s: {args.construct_s}", scenario.read_text())
            scenario = work / "scenarios" / scenario.name
            scenario.parent.mkdir()
            scenario.write_text(text)
        m = re.search(r"construct_s: ([0-9.]+)", scenario.read_text())
        print(f"scenario: {scenario.name} (8 variants x 4 steps, construct_s {m.group(1) if m else '?'} s: "
              f"the steps mostly wait); {os.cpu_count()} CPU cores; python {sys.version.split()[0]}")
        print(f"{'devices':>7} {'-n':>3} {'wall s':>8} {'speedup':>8} {'target':>7} {'efficiency':>10} "
              f"{'step work s':>11} {'tests':>6} {'failed':>6}  worker -> device")
        base, reference, ok = None, None, True
        for n in args.workers:
            wall, rc, output, xml = run_pytest(scenario, n, n, work)
            if not xml.is_file():
                print(f"{n:>7} {n:>3}  pytest produced no JUnit (exit {rc}):\n{output[-3000:]}")
                return 1
            outcomes, devices, step_work = read_junit(xml)
            base = base or wall
            speedup = base / wall
            target = 0.9 * n
            pinning = ", ".join(f"{w}->{','.join(sorted(d))}" for w, d in sorted(devices.items()))
            distinct = all(len(d) == 1 for d in devices.values()) and \
                len({next(iter(d)) for d in devices.values()}) == len(devices) and \
                all(int(next(iter(d))) < n for d in devices.values())
            failed = sum(1 for o in outcomes.values() if o == "failed")
            reference = reference or outcomes
            same = outcomes == reference
            ok &= distinct and same and speedup >= target
            print(f"{n:>7} {n:>3} {wall:>8.1f} {speedup:>7.2f}x {target:>6.1f}x {speedup / n:>9.0%} "
                  f"{step_work:>11.1f} {len(outcomes):>6} {failed:>6}  {pinning}"
                  f"{'' if distinct else '  (DEVICES SHARED OR OUTSIDE THE LIST)'}"
                  f"{'' if same else '  (OUTCOMES DIFFER FROM -n 1)'}")
        n = max(args.workers)
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in range(max(1, n // 2)))}
        proc = subprocess.run([sys.executable, "-m", "pytest", str(scenario), "-n", str(n), "--gpus-per-worker", "1",
                               "--collect-only", "-q"], cwd=ROOT, env=env, capture_output=True, text=True)
        refusal = next((line for line in (proc.stdout + proc.stderr).splitlines() if "ERROR" in line), "")
        print(f"-n {n} on {max(1, n // 2)} device(s): exit {proc.returncode}: {refusal.strip()}")
        ok &= proc.returncode == 4
    print("all checks passed" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
