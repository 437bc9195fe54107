"""`bisect --env VERSION=INTERPRETER`: versions that are installed already (e.g. vLLM releases
unpacked from offline bundles on an air-gapped GPU node), one interpreter each, nothing built.

Each "installation" here is a folder with the fakeengine package (good or bad teardown) and a
two-line wrapper script that puts it on PYTHONPATH, as on the GPU node. A bisection of two
versions must really run both: with ends taken on trust it would prove nothing.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest

from harness.bisect import search, sources
from harness.errors import InputError
from tests.bisect_fixtures import ROOT, main, package_files


def install(work: Path, version: str, bad: bool) -> Path:
    """fakeengine `version` in its own folder, and the wrapper interpreter that sees it."""
    site = work / f"site-{version}"
    for name, text in package_files(version, bad).items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text(text, encoding="utf-8")
    wrapper = work / f"python-{version}"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={site}:{ROOT} exec {sys.executable} "$@"\n', encoding="utf-8")
    wrapper.chmod(0o755)
    return wrapper


def bisect(capsys, *argv: str) -> tuple[int, str]:
    rc = main(["bisect", "scenario/fakeengine.yaml", "--out", "results", "--fail-on", "held-after:call>5", *argv])
    out = capsys.readouterr()
    return rc, out.out + out.err


def runs_made(output: str) -> list[str]:
    return re.findall(r"^\[\d+\] (\S+)", output, re.M)


def test_two_installed_versions_are_both_run_and_the_fix_is_found(work, capsys):
    old, new = install(work, "0.21.0", bad=True), install(work, "0.22.0", bad=False)
    rc, out = bisect(capsys, "--env", f"0.22.0={new}", "--env", f"0.21.0={old}",  # any order
                     "--find", "fix", "--bad", "0.21.0", "--good", "0.22.0")
    assert rc == 0, out
    assert "bisect: 2 revisions from 0.21.0 (bad) to 0.22.0 (fixed)" in out
    assert sorted(runs_made(out)) == ["0.21.0", "0.22.0"], "both ends must really run"
    assert "bad: step 'first' still held" in out and "fixed: 3 steps, 0 failed" in out
    assert "first fixed revision: 0.22.0" in out
    assert "taken on trust" not in out
    junits = re.findall(r"^  (?:last bad|first fixed) JUnit: (\S+)", out, re.M)
    assert len(junits) == 2 and all(Path(j).is_file() for j in junits)

    # again: both verdicts are cached, nothing runs
    rc, again = bisect(capsys, "--env", f"0.21.0={old}", "--env", f"0.22.0={new}", "--find", "fix")
    assert rc == 0 and runs_made(again) == [] and "first fixed revision: 0.22.0" in again


def test_a_regression_among_installed_versions_and_its_resume_command(work, capsys):
    pythons = {v: install(work, v, bad=v >= "1.2") for v in ("1.0", "1.1", "1.2", "1.3")}
    rc, out = bisect(capsys, *[a for v, p in pythons.items() for a in ("--env", f"{v}={p}")])
    assert rc == 0, out
    assert "first bad revision: 1.2" in out
    resume = shlex.split(re.search(r"resume: (.+)", out).group(1))
    assert "--env" in resume and "--versions" not in resume
    rc, resumed = main(resume[2:]), capsys.readouterr().out
    assert rc == 0 and runs_made(resumed) == [] and "first bad revision: 1.2" in resumed


def test_an_interpreter_that_does_not_run_is_skipped(work, capsys):
    good, bad = install(work, "1.0", bad=False), install(work, "1.2", bad=True)
    rc, out = bisect(capsys, "--env", f"1.0={good}", "--env", f"1.1={work / 'missing-python'}",
                     "--env", f"1.2={bad}")
    assert rc == 1, out
    assert "skip: build: --env 1.1: cannot run" in out
    assert "the first bad revision is one of 2" in out


def test_two_revisions_run_both_ends_in_the_pure_search():
    b = search.Bisection(2)
    asked = []
    while (i := b.next()) is not None:
        asked.append(i)
        b.record(i, search.Behaviour.NEW if i == 1 else search.Behaviour.OLD)
    assert sorted(asked) == [0, 1]
    assert b.result().status is search.Status.FOUND and b.result().unverified == ()


def test_env_options_are_checked_before_anything_runs(tmp_path):
    py = sys.executable
    assert sources.installed_envs([f"0.22.0={py}", f"0.21.0={py}"], None, None) == [("0.21.0", py), ("0.22.0", py)]
    assert [v for v, _ in sources.installed_envs([f"b={py}", f"a={py}"], None, None)] == ["b", "a"], "as given"
    assert sources.installed_envs(["1=rel/python"], None, None)[0][1] == str(Path("rel/python").absolute())
    assert [v for v, _ in sources.installed_envs([f"{v}={py}" for v in ("1", "2", "3", "4")], "2", "3")] == ["2", "3"]
    for specs, old, new, message in [(["0.21.0"], None, None, "not VERSION=INTERPRETER"),
                                     ([f"1={py}", f"1={py}"], None, None, "given twice"),
                                     ([f"1={py}", f"2={py}"], "1", None, "give both"),
                                     ([f"1={py}", f"2={py}"], "1", "3", "none of the --env versions"),
                                     ([f"1={py}", f"2={py}"], "2", "1", "must come before")]:
        with pytest.raises(InputError, match=message):
            sources.installed_envs(specs, old, new)


def test_env_is_not_mixed_with_other_sources(work, capsys):
    rc, out = bisect(capsys, "--env", f"1={sys.executable}", "--env", f"2={sys.executable}", "--versions", "1..2")
    assert rc == 2 and "choose one" in out
    rc, out = bisect(capsys, "--env", f"1={sys.executable}", "--env", f"2={sys.executable}", "--recipe", "x")
    assert rc == 2 and "--env names environments installed already" in out
