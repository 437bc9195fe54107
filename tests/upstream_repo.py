"""A throwaway git repository of a test tree shaped like vLLM's own (tests/conftest.py's VllmRunner,
cleanup_fixture; tests/samplers), whose VllmRunner.__exit__ keeps the engine alive at first and
frees it, as upstream's does at 9aaf83ef, from a later commit on."""

from __future__ import annotations

from pathlib import Path

from tests.bisect_fixtures import commit_files, dirty, git, snapshot

TREE = Path(__file__).parent / "upstream_tree"
#: upstream's VllmRunner.__exit__ at 9aaf83ef, as tests/upstream_tree has it
FREES = """        try:
            self.llm.llm_engine.engine_core.shutdown()
        except Exception:
            pass
        del self.llm
        cleanup_dist_env_and_memory()"""
#: the bug: the runner's engine outlives its test
KEEPS = """        HELD.append(self.llm)
        del self.llm
        cleanup_dist_env_and_memory()"""

TESTS = '''import pytest


@pytest.mark.parametrize("seed", [0, 1])
def test_greedy(vllm_runner, example_prompts, seed):
    with vllm_runner("facebook/opt-125m", seed=seed, dtype="float32", max_model_len=256) as vllm_model:
        outputs = vllm_model.generate_greedy(example_prompts, 4)
    assert all(len(ids) == 4 for ids, _ in outputs)
'''

#: (message, fixed from here on) of each commit; the fix lands at FIXED_AT
COMMITS = ["tests: a VllmRunner for the sampler tests", "docs: how to run the tests", "tests: two seeds",
           "tests: VllmRunner.__exit__ shuts the engine core down", "docs: a note on the fix"]
FIXED_AT = 3


def tree(fixed: bool, i: int) -> dict[str, str]:
    """tests/upstream_tree with test_pair.py; before the fix its runner keeps the engine."""
    files = {str(p.relative_to(TREE)): p.read_text(encoding="utf-8") for p in TREE.rglob("*")
             if p.is_file() and "__pycache__" not in p.parts}
    conftest = files["tests/conftest.py"]
    assert FREES in conftest
    files["tests/conftest.py"] = conftest.replace(FREES, FREES if fixed else KEEPS) + "\n\nHELD = []\n"
    return {**files, "tests/samplers/test_pair.py": TESTS, "README.md": f"revision {i}\n",
            "vllm/__init__.py": "raise ImportError('a source tree without its kernels: never imported')\n"}


def make_repo(path: Path) -> list[str]:
    """Five commits (old to new); the runner frees its engine from commit FIXED_AT on. Shas."""
    path.mkdir(parents=True)
    git(path, "init", "-q")
    return [commit_files(path, tree(i >= FIXED_AT, i), msg) for i, msg in enumerate(COMMITS)]


def make_dirty(repo: Path) -> None:
    """The user's checkout as people leave it: a staged README, work in progress on the runner."""
    dirty(repo, staged=("README.md", "staged\n"), unstaged="tests/conftest.py")


def state(repo: Path) -> dict[str, str]:
    """What a run must leave exactly as it was: the checkout (snapshot), every ref and worktree."""
    return {**snapshot(repo), "refs": git(repo, "for-each-ref"),
            "worktrees": git(repo, "worktree", "list", "--porcelain")}


def scenario(folder: Path, *, base: str = "${BASE_REF}", head: str = "${HEAD_REF}", release_delay_s: float = 0,
             args: str = "[tests/samplers/test_pair.py, -v]") -> Path:
    """Two `native` variants at two refs of ${UPSTREAM_REPO}, in-process engines on a modelled device."""
    env = '{VLLM_ENABLE_V1_MULTIPROCESSING: "0", VLLM_CPU_KVCACHE_SPACE: "1"}'
    inject = f"{{device_model: {{total_gib: 16, release_delay_s: {release_delay_s}}}}}"
    path = folder / "native_refs.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(f"""version: 1
name: native_refs
platform: rocm
pytest:
  rootdir: ${{UPSTREAM_REPO}}
  args: {args}
timeouts: {{step: 300, worker_start: 300}}
variants:
  pr_base: {{profile: native, ref: "{base}", env: {env}, inject: {inject}}}
  pr_head: {{profile: native, ref: "{head}", env: {env}, inject: {inject}}}
""", encoding="utf-8")
    return path
