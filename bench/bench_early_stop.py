"""Engine builds to a verdict, and false `fix confirmed` rate: early stopping against a fixed N.

Rounds are recorded on the simulated device: one real run per flake setting (`--no-early-stop`,
many repeats), whose lazy release has a seeded random delay so that the legacy teardown's next
construction fails only sometimes. Four variants run each round: the baseline (legacy), `no_op` (the
same teardown: a "fix" that fixes nothing), `partial` (legacy plus a short sleep: fewer failures,
not none) and `with_fix` (the fixed profile). Each round is one fresh worker per variant, so the
recorded rounds are independent draws; a trial of a fixed-N run is N rounds drawn from them
(seeded), judged by the harness's verdict at p < 0.05, and the same trial with early stopping is
judged round by round by harness.run.earlystop, then by the verdict at its last look's level.

A false confirm is `fix confirmed` for `no_op` or `partial`. Usage:
    python bench/bench_early_stop.py [--rounds 20] [--n 10] [--trials 400]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.results import verdict  # noqa: E402
from harness.results.junitread import Case, read_cases  # noqa: E402
from harness.run import earlystop, runner  # noqa: E402
from harness.model import Verdict  # noqa: E402

CANDIDATES = ("no_op", "partial", "with_fix")
# (label, release_jitter_s, partial's extra sleep): the legacy teardown's next construction fails when
# the seeded delay U(0, jitter) outlasts the construction's 0.05 s, so a larger jitter flakes more.
SETTINGS = (("low", 0.08, 0.006), ("mid", 0.14, 0.02), ("high", 0.4, 0.08))


def scenario(jitter: float, sleep: float, seed: int) -> str:
    return f"""\
version: 1
name: bench_early_stop
platform: rocm
backend: sim
sim: {{construct_s: 0.05, release_delay_s: 0.0, release_jitter_s: {jitter}, seed: {seed}}}
timeouts: {{step: 30, worker_start: 30}}
defaults: {{model: m, gpu_memory_utilization: 0.9}}
teardown_profiles:
  legacy_sleep: [del_llm, cleanup_dist_env, {{sleep: {{seconds: {sleep}}}}}]
variants:
  without_fix: {{profile: legacy}}
  no_op: {{profile: legacy}}
  partial: {{profile: legacy_sleep}}
  with_fix: {{profile: fixed}}
baseline: without_fix
steps:
  - {{name: s1}}
  - {{name: s2}}
  - {{name: s3}}
  - {{name: s4}}
"""


def record(tmp: Path, label: str, jitter: float, sleep: float, rounds: int, seed: int) -> dict[str, list[list[Case]]]:
    """Run the scenario for real; each variant's cases, split into rounds."""
    path = tmp / f"{label}.yaml"
    path.write_text(scenario(jitter, sleep, seed))
    result = runner.run(path, runner.RunOptions(out=tmp / "out", repeat=rounds, early_stop=False,
                                                announce=lambda _: None))
    out: dict[str, list[list[Case]]] = {}
    for name in ("without_fix", *CANDIDATES):
        by_round: dict[int, list[Case]] = defaultdict(list)
        for c in read_cases(result.run_dir / f"{name}.xml"):
            by_round[int(c.name.rsplit("[", 1)[1].rstrip("]"))].append(c)
        out[name] = [by_round[r] for r in sorted(by_round)]
    return out


def _renamed(rounds: list[list[Case]]) -> list[Case]:
    return [replace(c, name=f"{c.name.rsplit('[', 1)[0]}[{i}]") for i, cases in enumerate(rounds) for c in cases]


def _counts(rounds: list[list[Case]]) -> tuple[int, int]:
    cases = [c for r in rounds for c in r if c.outcome.value != "skipped"]
    return sum(c.vram_failure for c in cases), len(cases)


def trial(base: list[list[Case]], cand: list[list[Case]], n: int, name: str) -> dict[str, tuple[Verdict, int]]:
    """One fixed-N run and the same run stopped early: verdict and engine builds of each."""
    def builds(rounds):
        return sum(c.outcome.value != "skipped" for r in rounds for c in r)

    fixed = verdict.evaluate({"without_fix": _renamed(base), name: _renamed(cand)}, "without_fix", n).verdict
    stop = earlystop.EarlyStop("without_fix", [name], n, len(base[0]))
    k = n
    for r in range(1, n + 1):
        if stop.after_round(r, {"without_fix": _counts(base[:r]), name: _counts(cand[:r])}):
            k = r
            break
    early = verdict.evaluate({"without_fix": _renamed(base[:k]), name: _renamed(cand[:k])}, "without_fix", n,
                             alpha=stop.level).verdict
    return {"fixed": (fixed, builds(base) + builds(cand)), "early": (early, builds(base[:k]) + builds(cand[:k]))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20, help="rounds recorded per flake setting")
    parser.add_argument("--n", type=int, default=10, help="the fixed N (repeat: N)")
    parser.add_argument("--trials", type=int, default=400, help="trials drawn per setting and candidate")
    args = parser.parse_args()
    rng = random.Random(0)
    total = defaultdict(lambda: defaultdict(int))
    print(f"N = {args.n}; {args.trials} trials per row, drawn from {args.rounds} recorded rounds per setting\n")
    print(f"{'setting':8} {'candidate':9} {'VRAM rate b/c':>14} | {'fixed: builds':>13} {'confirm':>8} | "
          f"{'early: builds':>13} {'(share)':>8} {'confirm':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for seed, (label, jitter, sleep) in enumerate(SETTINGS):
            rec = record(Path(tmp), label, jitter, sleep, args.rounds, seed)
            base_k, base_n = _counts(rec["without_fix"])
            for name in CANDIDATES:
                cand_k, cand_n = _counts(rec[name])
                row = defaultdict(int)
                for _ in range(args.trials):
                    picks = [rng.randrange(args.rounds) for _ in range(args.n)]
                    cpicks = [rng.randrange(args.rounds) for _ in range(args.n)]
                    res = trial([rec["without_fix"][i] for i in picks], [rec[name][i] for i in cpicks], args.n, name)
                    for policy, (v, b) in res.items():
                        row[f"{policy}_builds"] += b
                        row[f"{policy}_confirm"] += v is Verdict.FIX_CONFIRMED
                for key, value in row.items():
                    total["false" if name != "with_fix" else "true"][key] += value
                    total["all"][key] += value
                total["false" if name != "with_fix" else "true"]["trials"] += args.trials
                total["all"]["trials"] += args.trials
                t = args.trials
                print(f"{label:8} {name:9} {base_k / base_n:6.2f}/{cand_k / cand_n:<6.2f}  | "
                      f"{row['fixed_builds'] / t:13.1f} {row['fixed_confirm'] / t:8.1%} | "
                      f"{row['early_builds'] / t:13.1f} {row['early_builds'] / row['fixed_builds']:8.1%} "
                      f"{row['early_confirm'] / t:8.1%}")
    f, tr, a = total["false"], total["true"], total["all"]
    print(f"\nfalse-confirm rate (no_op, partial): fixed N {f['fixed_confirm'] / f['trials']:.2%}, "
          f"early stop {f['early_confirm'] / f['trials']:.2%}")
    print(f"true-confirm rate (with_fix):        fixed N {tr['fixed_confirm'] / tr['trials']:.2%}, "
          f"early stop {tr['early_confirm'] / tr['trials']:.2%}")
    print(f"engine builds, all rows: early stop uses {a['early_builds'] / a['fixed_builds']:.1%} of fixed N's")
    print("target: <= 60% of the builds at no higher false-confirm rate")


if __name__ == "__main__":
    main()
