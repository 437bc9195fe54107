"""`bisect` and `bisect-step` end to end: throwaway git repositories of a tiny engine package whose
teardown breaks at a known commit, run on the simulated device (each run takes about two seconds).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.bisect_fixtures import (RECIPE_ARGS, ROOT, commit_files, dirty, engine_files, entry_argv, git, main,
                                   make_engine_repo, make_wheel, package_files, snapshot)


def bisect(capsys, *argv: str) -> tuple[int, str]:
    rc = main(["bisect", "scenario/fakeengine.yaml", "--out", "results", *argv])
    out = capsys.readouterr()
    return rc, out.out + out.err


def runs_made(output: str) -> int:
    return len(re.findall(r"^\[\d+\] ", output, re.M))


def reported_paths(output: str) -> list[Path]:
    """The paths of the final summary: the first bad revision's log, the two JUnit files."""
    return [Path(p) for p in re.findall(r"^  (?:log|last \w+ JUnit|first \w+ JUnit): (\S+)", output, re.M)]


# --------------------------------------------------------------------------- commits
@pytest.mark.parametrize("first_bad", [2, 5, 6])  # 6: the bad end itself
def test_commits_bisect_finds_the_commit_that_dropped_the_cleanup(work, capsys, first_bad):
    shas = make_engine_repo(work / "repo", 7, first_bad, unbuildable=[3])
    dirty(work / "repo")
    before = snapshot(work / "repo")
    rc, out = bisect(capsys, "--repo", "repo", "--good", shas[0], "--bad", shas[-1], *RECIPE_ARGS)
    assert rc == 0, out
    assert f"first bad revision: {shas[first_bad][:10]} commit {first_bad}: drop the engine cleanup" in out
    assert "skip: build: recipe '{python} build.py' failed" in out, "commit 3 does not build"
    assert out.count("\n  run: ") <= 4, "scenario runs: at most ceil(log2 7) + 1"
    assert all(p.exists() for p in reported_paths(out)) and len(reported_paths(out)) == 3
    assert snapshot(work / "repo") == before

    # the same command again: every verdict is cached, nothing is built or run
    rc, again = bisect(capsys, "--repo", "repo", "--good", shas[0], "--bad", shas[-1], *RECIPE_ARGS)
    assert rc == 0 and runs_made(again) == 0 and "env:" not in again
    assert f"first bad revision: {shas[first_bad][:10]}" in again

    # the resume command printed after the first step narrows the range and reuses the verdicts
    resume = shlex.split(re.search(r"resume: (.+)", out).group(1))
    assert resume[:3] == ["python", "run.py", "bisect"]
    rc, resumed = main(resume[2:]), capsys.readouterr().out
    assert rc == 0 and runs_made(resumed) == 0 and f"first bad revision: {shas[first_bad][:10]}" in resumed
    assert snapshot(work / "repo") == before


def test_a_skipped_commit_next_to_the_change_gives_a_range(work, capsys):
    shas = make_engine_repo(work / "repo", 5, first_bad=3, unbuildable=[2])
    rc, out = bisect(capsys, "--repo", "repo", "--good", shas[0], "--bad", shas[-1], *RECIPE_ARGS)
    assert rc == 1, out
    assert f"the first bad revision is one of 2 (skipped revisions hide which): {shas[2][:10]} commit 2, " \
           f"{shas[3][:10]} commit 3" in out
    state = json.loads(next((work / "results" / "bisect").glob("*/state.json")).read_text())
    assert {r["label"]: r["verdict"] for r in state["revisions"].values()} == \
        {shas[1][:10]: "good", shas[2][:10]: "skip", shas[3][:10]: "bad"}


def test_interrupting_a_build_leaves_no_env_and_the_checkout_as_found(work):
    shas = make_engine_repo(work / "repo", 4, first_bad=2)
    dirty(work / "repo")
    before = snapshot(work / "repo")
    pid_file = work / "build.pid"
    env = {**os.environ, "FAKEENGINE_SLOW_BUILD": str(pid_file),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    with open(work / "out.txt", "w") as out:
        proc = subprocess.Popen([*entry_argv(), "bisect", "scenario/fakeengine.yaml", "--out", "results",
                                 "--repo", "repo", "--good", shas[0], "--bad", shas[-1], *RECIPE_ARGS],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline and proc.poll() is None, (work / "out.txt").read_text()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)  # Ctrl-C, in the middle of building a revision
        assert proc.wait(30) == 130
    output = (work / "out.txt").read_text()
    assert "interrupted; resume: python run.py bisect" in output
    builder = int(pid_file.read_text())
    assert not psutil.pid_exists(builder) or psutil.Process(builder).status() == psutil.STATUS_ZOMBIE
    assert list((work / "cache" / "envs").iterdir()) == [], "no half-built env is left to be reused"
    assert not list((work / "results").glob("bisect/*/state.json")), "no verdict for an unfinished revision"
    assert snapshot(work / "repo") == before


# --------------------------------------------------------------------------- PR branches
def test_pr_bisect_finds_the_commit_of_the_pr_that_fixed_the_failure(work, capsys):
    upstream = work / "upstream"
    make_engine_repo(upstream, 2, first_bad=1)  # main has the regression
    git(upstream, "checkout", "-q", "-b", "fix-teardown")
    pr = [commit_files(upstream, {"docs.txt": "notes"}, "pr: docs"),
          commit_files(upstream, engine_files("0.2", bad=False), "pr: restore the engine cleanup"),
          commit_files(upstream, {"docs.txt": "more"}, "pr: more docs")]
    git(upstream, "update-ref", "refs/pull/42/head", pr[-1])
    git(upstream, "checkout", "-q", "main")
    git(work, "clone", "-q", str(upstream), "clone")
    before = snapshot(work / "clone")
    rc, out = bisect(capsys, "--repo", "clone", "--pr", "42", "--find", "fix", *RECIPE_ARGS)
    assert rc == 0, out
    assert f"first fixed revision: {pr[1][:10]} pr: restore the engine cleanup" in out
    assert "last bad JUnit: /" in out and "first fixed JUnit: /" in out
    assert snapshot(work / "clone") == before


# --------------------------------------------------------------------------- releases
def test_release_bisect_over_a_local_package_index(work, capsys):
    index = work / "wheels"
    for version, bad in [("1.0", False), ("1.1", False), ("1.3", False), ("1.3rc1", True), ("1.4", True),
                         ("1.5", True), ("2.0", True)]:
        make_wheel(index, "fakeengine", version, package_files(version, bad))
    make_wheel(index, "fakeengine", "1.2", package_files("1.2", False), requires=["not-on-this-index"])
    rc, out = bisect(capsys, "--package", "fakeengine", "--versions", "1.0..1.5", "--find-links", str(index),
                     "--pip-args=--no-index")
    assert rc == 0, out
    assert "bisect: 6 revisions from 1.0 (good) to 1.5 (bad)" in out, "pre-releases and 2.0 are left out"
    assert "skip: build: pip install fakeengine==1.2 failed" in out
    assert "first bad revision: 1.4" in out
    assert runs_made(out) <= 4
    resume = shlex.split(re.findall(r"resume: (.+)", out)[-1])
    assert resume[resume.index("--versions") + 1] == "1.3,1.4,1.5", "the narrowed range, listed"
    rc, resumed = main(resume[2:]), capsys.readouterr().out
    assert rc == 0 and runs_made(resumed) == 0 and "first bad revision: 1.4" in resumed


# --------------------------------------------------------------------------- bisect-step / git bisect run
def use_package(monkeypatch, folder: Path, bad: bool) -> None:
    """The current environment has fakeengine (good or bad), as in a `git bisect run` checkout."""
    for name, text in package_files("1", bad).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.syspath_prepend(str(folder))


def step(capsys, *argv: str) -> tuple[int, str]:
    rc = main(["bisect-step", "scenario/fakeengine.yaml", "--out", "results", *argv])
    out = capsys.readouterr()
    return rc, out.out + out.err


def test_bisect_step_exit_codes(work, capsys, monkeypatch):
    use_package(monkeypatch, work / "good", bad=False)
    rc, out = step(capsys)
    assert rc == 0 and out.startswith("good: 3 steps, 0 failed"), out
    rc, out = step(capsys, "--python", str(work / "no-such-python"))
    assert rc == 125 and "interpreter does not exist" in out
    rc, out = step(capsys, "--variant", "nope")
    assert rc == 128 and "no variant 'nope' (valid: engine_teardown, with_fix)" in out
    rc, out = step(capsys, "--fail-on", "held-after:engine_core_shutdown>1")
    assert rc == 128 and "runs no action 'engine_core_shutdown' (its actions: call)" in out

    monkeypatch.delitem(sys.modules, "fakeengine", raising=False)
    monkeypatch.delitem(sys.modules, "fakeengine.teardown", raising=False)
    use_package(monkeypatch, work / "bad", bad=True)
    rc, out = step(capsys, "--fail-on", "held-after:call>5")
    assert rc == 1 and "bad: step 'first' still held 6.40 GiB after call (limit 5 GiB)" in out, out


def git_bisect_run(work: Path, commits: int, first_bad: int, *options: str) -> tuple[list[str], str, str, int]:
    """`git bisect run run.py bisect-step ...` over a fresh engine repo: its commits, the output, the
    bisect log, and git's exit status."""
    shas = make_engine_repo(work / "repo", commits, first_bad=first_bad)
    repo = work / "repo"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(repo), os.environ.get("PYTHONPATH", "")])}
    git(repo, "bisect", "start", shas[-1], shas[0])
    try:
        done = subprocess.run(["git", "bisect", "run", *entry_argv(), "bisect-step",
                               str(work / "scenario" / "fakeengine.yaml"), "--out", str(work / "results"), *options],
                              cwd=repo, env=env, capture_output=True, text=True, timeout=120)
        log = subprocess.run(["git", "bisect", "log"], cwd=repo, capture_output=True, text=True).stdout
    finally:
        git(repo, "bisect", "reset")
    return shas, done.stdout + done.stderr, log, done.returncode


def test_git_bisect_run_with_bisect_step(work):
    shas, output, _, _ = git_bisect_run(work, 6, 3)
    assert f"{shas[3]} is the first bad commit" in output, output


@pytest.mark.parametrize("mistake", [["--fail-onn", "any"], ["--fail-on", "anything"], ["--variant"]],
                         ids=["unknown option", "bad value", "missing value"])
def test_a_typo_under_git_bisect_run_aborts_the_bisection_instead_of_blaming_commit_1(work, mistake):
    """`git bisect run` reads exit 1..127 (but 125) as "bad": argparse's usage error (2) would mark
    every commit bad and name the first one. bisect-step exits 128 for it, which aborts the bisection."""
    _, output, log, code = git_bisect_run(work, 4, 3, *mistake)
    assert code != 0 and "is the first bad commit" not in output, output
    assert "aborting: exit 128" in output, output
    assert "git bisect bad" not in log and "git bisect good" not in log, log  # no revision was judged


def test_a_mistake_in_the_options_stops_the_bisection_rather_than_skipping_every_revision(work, capsys):
    shas = make_engine_repo(work / "repo", 3, first_bad=1)
    rc, out = bisect(capsys, "--repo", "repo", "--good", shas[0], "--bad", shas[-1], *RECIPE_ARGS,
                     "--variant", "nope")
    assert rc == 2 and "no variant 'nope' (valid: engine_teardown, with_fix)" in out
    assert not list((work / "results").glob("bisect/*/state.json"))
    rc, out = bisect(capsys, "--repo", "repo", "--good", shas[0], *RECIPE_ARGS)
    assert rc == 2 and "give both --good and --bad" in out
    rc, out = bisect(capsys, "--repo", "repo", "--versions", "1..2")
    assert rc == 2 and "choose one" in out


def test_a_good_end_that_fails_too_is_reported_not_blamed_on_a_commit(work, capsys):
    shas = make_engine_repo(work / "repo", 3, first_bad=0)
    rc, out = bisect(capsys, "--repo", "repo", "--good", shas[0], "--bad", shas[-1], *RECIPE_ARGS)
    assert rc == 1
    assert f"the good end {shas[0][:10]} commit 0: drop the engine cleanup is bad too: nothing to bisect" in out
    assert "good end JUnit: /" in out and "first bad revision" not in out
