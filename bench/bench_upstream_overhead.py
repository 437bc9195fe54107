"""Harness overhead on a pytest suite: `run.py` on an upstream-shaped test tree against plain
`pytest` on the same files, in one process each, interleaved, on this machine.

The tree (written to a temporary folder) is shaped like vLLM's: a tests/conftest.py whose
VllmRunner.__exit__ does upstream's pre-fix teardown (del llm; cleanup_dist_env_and_memory()),
its autouse cleanup_fixture, and tests/samplers/test_bench.py building one engine per test through
the runner (the built-in tiny Llama by path, block_size 32: nothing for the harness to substitute).
The harness runs one variant with profile `legacy` (the same actions as upstream's __exit__), so
both do the same engine work; the difference is the harness's own cost (a worker process, probes,
events, JUnit, report). Usage: python bench/bench_upstream_overhead.py [--tests N] [--reps N]
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

CONFTEST = '''
import pytest
from vllm import LLM, SamplingParams
from vllm.distributed import cleanup_dist_env_and_memory


class VllmRunner:
    def __init__(self, model_name, seed=0, max_model_len=256, block_size=32, enforce_eager=True):
        self.llm = LLM(model=model_name, seed=seed, max_model_len=max_model_len, block_size=block_size,
                       enforce_eager=enforce_eager)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        del self.llm
        cleanup_dist_env_and_memory()


@pytest.fixture(scope="session")
def vllm_runner():
    return VllmRunner


@pytest.fixture(autouse=True)
def cleanup_fixture():
    yield


@pytest.fixture
def example_prompts():
    return ["Hello, my name is", "The capital of France is", "A computer program is"]
'''

TEST = '''
import os
import pytest
from vllm import SamplingParams


@pytest.mark.parametrize("seed", range({n}))
def test_generate(vllm_runner, example_prompts, seed):
    with vllm_runner(os.environ["BENCH_MODEL"], seed=seed) as m:
        out = m.llm.generate(example_prompts, SamplingParams(temperature=1.0, max_tokens=32), use_tqdm=False)
    assert all(len(o.outputs[0].token_ids) == 32 for o in out)
'''

SCENARIO = '''
version: 1
name: bench_upstream
platform: cpu
pytest: {{rootdir: "{root}", args: [tests/samplers, -q]}}
variants:
  legacy: {{profile: legacy}}
'''


def _tree(root: Path, n: int) -> None:
    (root / "tests" / "samplers").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[tool.pytest.ini_options]\nmarkers = ["skip_global_cleanup"]\n')
    (root / "tests" / "__init__.py").write_text("")
    (root / "tests" / "samplers" / "__init__.py").write_text("")
    (root / "tests" / "conftest.py").write_text(CONFTEST)
    (root / "tests" / "samplers" / "test_bench.py").write_text(TEST.format(n=n))
    (root / "scenario.yaml").write_text(SCENARIO.format(root=root))


def _timed(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tests", type=int, default=4, help="engine-building tests in the suite (default 4)")
    ap.add_argument("--reps", type=int, default=2, help="runs of each, interleaved (default 2)")
    args = ap.parse_args()
    from harness.run.tinymodel import ensure_tiny_llama

    env = {**os.environ, "BENCH_MODEL": str(ensure_tiny_llama()), "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
           "VLLM_CPU_KVCACHE_SPACE": "1", "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "tree"
        _tree(root, args.tests)
        plain_argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:teardown_harness",
                      "-q", "tests/samplers"]
        harness_argv = [sys.executable, str(ROOT / "run.py"), str(root / "scenario.yaml"), "--out", str(Path(tmp) / "results")]
        plain, harness = [], []
        for _ in range(args.reps):
            plain.append(_timed(plain_argv, root, env))
            harness.append(_timed(harness_argv, root, env))
    p, h = statistics.median(plain), statistics.median(harness)
    print(f"suite: {args.tests} tests, one vLLM-CPU engine each (tiny Llama), {args.reps} runs each, interleaved")
    print(f"plain pytest        : median {p:7.2f} s  (runs: {', '.join(f'{x:.2f}' for x in plain)})")
    print(f"run.py (1 variant)  : median {h:7.2f} s  (runs: {', '.join(f'{x:.2f}' for x in harness)})")
    print(f"harness overhead    : {100 * (h - p) / p:+.1f} %  (target <= 5 %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
