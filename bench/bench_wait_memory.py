"""How soon does `wait_memory` return after device memory is really free?

A simulated device (the harness's ledger) releases an engine's memory at a known moment
(a random offset, so the poll phase is not lucky); we time how long after that moment
`wait_memory` returns. Beside it, the same wait with upstream's wait_for_gpu_memory_to_clear
polling interval (5 s). Usage: python bench/bench_wait_memory.py [--trials N]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.worker import teardown  # noqa: E402
from harness.backends.sim import SimBackend  # noqa: E402
from harness.sim.ledger import Ledger  # noqa: E402

GIB = 2**30


def trial(ledger_path: Path, poll_s: float, delay: float) -> float:
    backend = SimBackend({"sim": {"total_gib": 64, "baseline_gib": 0.5}, "ledger": str(ledger_path),
                          "devices": [0], "inject": {}, "platform": "rocm"})
    ledger = Ledger(str(ledger_path))
    entry = ledger.allocate(0, 58 * GIB, "engine", None)
    ledger.release(entry, delay_s=delay)
    freed_at = time.monotonic() + delay
    ctx = teardown.TeardownContext(llm=None, backend=backend, probe=backend.probe(), devices=[0],
                                   gpu_memory_utilization=0.92)
    teardown.wait_memory(ctx, {"threshold": "auto", "timeout_s": 60, "poll_s": poll_s})
    return time.monotonic() - freed_at


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--upstream-trials", type=int, default=4)
    args = parser.parse_args()
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for label, poll, n in (("harness wait_memory (poll 0.05 s)", 0.05, args.trials),
                               ("upstream's interval (poll 5 s)", 5.0, args.upstream_trials)):
            lat = [trial(Path(tmp) / f"l{label[:3]}{i}.json", poll, rng.uniform(0.5, 2.0)) for i in range(n)]
            rows.append((label, n, statistics.median(lat), max(lat)))
    print(f"{'wait':38} {'trials':>6} {'median late':>12} {'max late':>10}")
    for label, n, med, worst in rows:
        print(f"{label:38} {n:6d} {med:11.3f}s {worst:9.3f}s")
    print("target: harness max latency <= 0.100 s")


if __name__ == "__main__":
    main()
