"""How the main job's verdict depends on the modelled release delay: one run of
scenarios/sampler_mi250.yaml per delay, with `legacy`, `fixed` and `settle` as its three variants,
each run exactly as this shell loop does it:

    for d in 0 1 2 4 8 16; do
      python run.py scenarios/sampler_mi250.yaml --set inject.device_model.release_delay_s=$d \\
          --set "variants.settle={profile: settle, description: today's upstream}" --out DIR
    done

then a Markdown table from the runs' own results (summary.json, the JUnit files): per delay and
profile the verdict, the VRAM construction failures and the time `wait_memory` waited.
Usage: python bench/bench_release_delay.py [--delays 0,1,2,4,8,16] [--out DIR] [--table-only]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.results.junitread import read  # noqa: E402

SETTLE = "variants.settle={profile: settle, description: today's upstream}"
PROFILES = {"without_fix": "legacy", "with_fix": "fixed", "settle": "settle"}


def run(delay: str, out: Path) -> float:
    argv = [sys.executable, str(ROOT / "run.py"), str(ROOT / "scenarios/sampler_mi250.yaml"),
            "--set", f"inject.device_model.release_delay_s={delay}", "--set", SETTLE, "--out", str(out / delay)]
    start = time.monotonic()
    subprocess.run(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - start


def rows(out: Path, delay: str) -> list[str]:
    (run_dir,) = [p for p in (out / delay).glob("*/*") if p.is_dir()]
    summary = json.loads((run_dir / "summary.json").read_text())
    meta = json.loads((run_dir / "run.json").read_text())
    mode = next((s for s in meta["substitutions"] if "VLLM_ENABLE_V1_MULTIPROCESSING" in s), "")
    waits: dict[str, list[float]] = {v: [] for v in PROFILES}  # every wait_memory (settle has two a step)
    for line in (run_dir / "events.jsonl").read_text().splitlines():
        e = json.loads(line)
        if e["event"] == "action" and e["name"] == "wait_memory":
            waits[e["variant"]].append(e["duration_s"])
    lines = []
    for variant, profile in PROFILES.items():
        junit = read(run_dir / f"{variant}.xml")
        vram = sum(c.vram_failure for c in junit.cases)
        waited = waits[variant] or [0.0]
        process = {c.properties.get("engine_process", "?") for c in junit.cases}
        verdict = "baseline" if variant == summary["baseline"] else summary["candidates"][variant]["verdict"]
        lines.append(f"| {delay} | `{profile}` | {verdict} | {vram} of {len(junit.cases)} | "
                     f"{sum(waited):.1f} s (max {max(waited):.1f} s) | {', '.join(sorted(process))} |"
                     + (f" <!-- {mode} -->" if mode and variant == "without_fix" else ""))
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--delays", default="0,1,2,4,8,16")
    ap.add_argument("--out", default=None, help="results directory (default: a temporary one)")
    ap.add_argument("--table-only", action="store_true", help="only print the table of runs already in --out")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="bench-release-delay-"))
    delays = [d.strip() for d in args.delays.split(",")]
    if not args.table_only:
        for d in delays:
            wall = run(d, out)
            load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
            print(f"release_delay_s={d}: {wall:.0f} s, load average {load}", flush=True)
    print("| release_delay_s | profile | verdict | VRAM failures | wait_memory waited | engine process |")
    print("| --- | --- | --- | --- | --- | --- |")
    for d in delays:
        print("\n".join(rows(out, d)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
