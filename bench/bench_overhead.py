"""Harness overhead: `run.py scenarios/smoke_cpu.yaml` against a bare script doing the same work.

The bare script does what a plain pytest worker would: for each variant, one fresh process that
builds the same engines back-to-back, runs the same workloads and the same teardown calls
(legacy: del + cleanup_dist_env_and_memory; fixed: engine_core.shutdown + del + cleanup), with no
events, probes, expectations, JUnit or report. The harness also runs each variant in its own
process, so the difference is the harness's own cost. Usage: python bench/bench_overhead.py [--reps N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BARE = r"""
import sys, time
from harness.run import plan as planning
from harness.scenario import schema as scenario_mod

def main(path, profile):
    import vllm
    from vllm.distributed import cleanup_dist_env_and_memory
    rplan = planning.build(scenario_mod.load(path))
    for step in rplan.steps:
        llm = vllm.LLM(**step["engine"])
        for sp in step["workload"]["sampling"]:
            for _ in range(step["workload"]["runs"]):
                llm.generate(step["workload"]["prompts"], vllm.SamplingParams(**sp), use_tqdm=False)
        if profile == "fixed":
            llm.llm_engine.engine_core.shutdown()
        del llm
        cleanup_dist_env_and_memory()

if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
"""


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.monotonic()
    subprocess.run(argv, env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--scenario", default="scenarios/smoke_cpu.yaml")
    args = parser.parse_args()
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1",
           "PYTHONPATH": str(ROOT)}
    harness_t, bare_t = [], []
    with tempfile.TemporaryDirectory() as tmp:
        bare = Path(tmp) / "bare.py"
        bare.write_text(BARE)
        for _ in range(args.reps):  # interleaved, so drift on the machine hits both alike
            bare_t.append(sum(timed([sys.executable, str(bare), args.scenario, p], env) for p in ("legacy", "fixed")))
            harness_t.append(timed([sys.executable, "run.py", args.scenario, "--out", tmp], env))
    h, b = statistics.median(harness_t), statistics.median(bare_t)
    print(f"scenario: {args.scenario}, {args.reps} interleaved repetitions")
    print(f"bare script (2 processes): median {b:.2f} s  {['%.2f' % t for t in bare_t]}")
    print(f"harness run.py:            median {h:.2f} s  {['%.2f' % t for t in harness_t]}")
    print(f"overhead: {h - b:+.2f} s = {100 * (h - b) / b:+.1f} % of the bare time (target <= 5 %)")


if __name__ == "__main__":
    main()
