"""A checkout per variant, without vLLM: refs resolved and trees exported before anything is built,
bad input refused with one line naming the file and the key, and the user's checkout untouched,
also when the runner is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from harness import cli
from harness.upstream import checkout
from tests.bisect_fixtures import ROOT
from tests.upstream_repo import make_dirty, make_repo, scenario, state


@pytest.fixture
def repo(tmp_path):
    path = tmp_path / "repo"
    shas = make_repo(path)
    make_dirty(path)
    return path, shas


def _errors(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]


def _refused_naming(path: Path, key: str, tmp_path: Path, capsys) -> None:
    """validate and a run both exit 2 with one error line naming the file and the key; the run
    writes no run directory."""
    for argv in (["validate", str(path)], [str(path), "--out", str(tmp_path / "r")]):
        assert cli.main(argv) == 2
        (line,) = _errors(capsys)
        assert f"{path}: {key}:" in line
    assert not (tmp_path / "r").exists()


def test_export_writes_the_test_tree_and_nothing_into_the_repository(repo, tmp_path):
    path, shas = repo
    before = state(path)
    rev = checkout.resolve(path / "tests", shas[0])  # from inside the checkout: the repository's top
    assert (rev.repo, rev.sha, rev.prefix) == (path, shas[0], "tests/")
    rev = checkout.resolve(path, "HEAD~4")
    assert rev.sha == shas[0] and checkout.missing(rev, ["tests/samplers/test_pair.py::test_greedy", "-k",
                                                         "nothing/here"]) == []
    assert checkout.missing(rev, ["tests/models", "-v"]) == ["tests/models"]
    tree = checkout.export(rev, tmp_path / "out" / "v", ["tests/samplers"])
    assert sorted(p.name for p in tree.iterdir()) == ["README.md", "pyproject.toml", "tests"]
    assert "HELD.append(self.llm)" in (tree / "tests" / "conftest.py").read_text()  # the commit's, not the work tree's
    assert not list((tmp_path / "out").glob(".*tmp"))
    assert state(path) == before


def test_test_paths_skip_option_values():
    assert checkout.test_paths(["tests/samplers", "-k", "not multimodal", "-v", "tests/x.py::t", "-m", "slow",
                                "--deselect", "tests/y.py::z", "-p", "no:cacheprovider"]) == \
        ["tests/samplers", "tests/x.py"]


def _steps(tmp_path, variant: str) -> Path:
    path = tmp_path / "steps.yaml"
    path.write_text(textwrap.dedent(f"""\
        version: 1
        backend: sim
        variants:
          v: {variant}
        steps:
          - name: a
        """))
    return path


@pytest.mark.parametrize("variant, key", [("{profile: native}", "variants.v.profile"),
                                          ("{profile: legacy, ref: main}", "variants.v.ref"),
                                          ("{profile: legacy, rootdir: /tmp}", "variants.v.rootdir")])
def test_a_steps_scenario_refuses_native_and_checkouts(tmp_path, capsys, variant, key):
    path = _steps(tmp_path, variant)
    _refused_naming(path, key, tmp_path, capsys)


def test_tests_only_on_a_steps_scenario_is_refused(tmp_path, capsys, repo):
    path = _steps(tmp_path, "{profile: legacy}")
    _, shas = repo
    argv = ["bisect", str(path), "--repo", str(repo[0]), "--good", shas[0], "--bad", shas[1], "--tests-only",
            "--out", str(tmp_path / "r")]
    assert cli.main(argv) == 2
    (line,) = _errors(capsys)
    assert f"{path}: pytest:" in line and "--tests-only" in line


@pytest.mark.parametrize("base, key", [("no-such-ref", "variants.pr_base.ref"),
                                       ("${UNSET_REF_FOR_TEST}", "variants.pr_base.ref")])
def test_a_ref_that_does_not_resolve_names_its_key(tmp_path, capsys, repo, monkeypatch, base, key):
    monkeypatch.setenv("UPSTREAM_REPO", str(repo[0]))
    monkeypatch.delenv("UNSET_REF_FOR_TEST", raising=False)
    path = scenario(tmp_path, base=base, head=repo[1][-1])
    _refused_naming(path, key, tmp_path, capsys)


def test_a_ref_in_a_folder_that_is_no_repository(tmp_path, capsys, monkeypatch):
    (tmp_path / "plain" / "tests").mkdir(parents=True)
    monkeypatch.setenv("UPSTREAM_REPO", str(tmp_path / "plain"))
    path = scenario(tmp_path, base="main", head="main")
    assert cli.main([str(path), "--out", str(tmp_path / "r")]) == 2
    (line,) = _errors(capsys)
    assert f"{path}: pytest.rootdir:" in line and "not in a git repository" in line


def test_a_revision_without_the_test_paths_is_an_infrastructure_error(tmp_path, capsys, repo, monkeypatch):
    monkeypatch.setenv("UPSTREAM_REPO", str(repo[0]))
    path = scenario(tmp_path, base=repo[1][0], head=repo[1][-1], args="[tests/models/test_x.py, -v]")
    assert cli.main([str(path), "--out", str(tmp_path / "r")]) == 3
    (line,) = _errors(capsys)
    assert "variants.pr_base.ref" in line and "has no tests/models/test_x.py (pytest.args)" in line


def test_killing_the_runner_leaves_the_checkout_as_it_was(tmp_path, repo):
    path, shas = repo
    before = state(path)
    sc = scenario(tmp_path, base=shas[0], head=shas[-1])
    env = {**os.environ, "UPSTREAM_REPO": str(path), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), str(sc), "--out", str(tmp_path / "r")],
                            env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while not list((tmp_path / "r").glob("*/*/checkouts/pr_base")) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # the runner only: its worker stops itself (lifeline)
    proc.wait()
    assert list((tmp_path / "r").glob("*/*/checkouts/pr_base/tests/conftest.py"))
    assert state(path) == before


def test_bisect_step_runs_the_checkout_git_bisect_checked_out(tmp_path, repo, monkeypatch):
    from harness.bisect import command

    path, shas = repo
    monkeypatch.setenv("UPSTREAM_REPO", str(tmp_path / "elsewhere"))
    sc = scenario(tmp_path, base=shas[0], head=shas[-1])
    # --vllm-src wins over pytest.rootdir; HEAD is the revision, which every variant then runs
    assert command._checked_out(sc, str(path)) == (str(path), shas[-1])
    assert command._checked_out(_steps(tmp_path, "{profile: legacy}"), None) == (None, None)


def test_a_lazy_release_under_native_is_refused_not_ignored(tmp_path, capsys, repo):
    """`native` runs no action of the harness's, so no helper could hold the memory given back."""
    path = tmp_path / "native_lazy.yaml"
    path.write_text(textwrap.dedent(f"""\
        version: 1
        platform: cuda
        pytest: {{rootdir: {repo[0]}, args: [tests/samplers/test_pair.py]}}
        variants:
          v: {{profile: native, inject: {{device_model: false, lazy_release: {{seconds: 5}}}}}}
        """))
    assert cli.main([str(path), "--out", str(tmp_path / "r")]) == 2
    (line,) = _errors(capsys)
    assert f"{path}: variants.v.inject.lazy_release:" in line and "'legacy'" in line
    assert not (tmp_path / "r").exists()
