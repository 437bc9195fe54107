"""The pytest plugin end to end, through pytester: scenario YAML files as pytest items.

Each run is a real pytest session over tiny simulated scenarios (50 ms constructions): collection,
per-step results, the ``--junitxml`` file with the harness's cases and properties, ``-k``, which YAML
files are collected at all, and the same under pytest-xdist (``-n 2``).
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from xml.etree import ElementTree

import pytest

# Imported here, before any in-process pytester run: pytester takes the modules a run imported out of
# sys.modules again when the run ends, which breaks psutil (imported by the runner) for the next run.
import harness.pipeline  # noqa: F401
import harness.report.files  # noqa: F401
import harness.run.runner  # noqa: F401
import harness.ci.shard  # noqa: F401
from harness.results.junitread import read_cases
from harness.model import FailureClass, Outcome
from tests import sim_scenarios

pytest_plugins = ["pytester"]

TINY = sim_scenarios.bare_vs_fixed("tiny", release_delay_s=0.1)
INI = """\
[pytest]
addopts = --strict-markers -p no:cacheprovider
filterwarnings = error
"""
ALL = ["without_fix::greedy", "without_fix::seeded", "without_fix::third",
       "with_fix::greedy", "with_fix::seeded", "with_fix::third"]


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini(INI)
    (pytester.path / "scenarios").mkdir()
    (pytester.path / "scenarios" / "tiny.yaml").write_text(TINY)
    return pytester


_VERBOSE = re.compile(r"^(?:(?P<a>\S+\.yaml::\S+) (?P<wa>PASSED|FAILED|SKIPPED|ERROR)\b"  # plain -v
                      r"|\[gw\d+\] \[ *\d+%\] (?P<wb>PASSED|FAILED|SKIPPED|ERROR) (?P<b>\S+\.yaml::\S+))")  # xdist -v


def outcomes(result: pytest.RunResult) -> dict[str, str]:
    """<variant>::<step> -> PASSED/FAILED/SKIPPED/ERROR, from the verbose lines (with or without xdist)."""
    out = {}
    for line in result.outlines:
        if m := _VERBOSE.match(line):
            out[(m["a"] or m["b"]).split("::", 1)[1]] = m["wa"] or m["wb"]
    return out


def junit_cases(path: Path) -> dict[str, ElementTree.Element]:
    return {f"{c.get('classname')}::{c.get('name')}": c for c in ElementTree.parse(path).getroot().iter("testcase")}


def props(case: ElementTree.Element) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for p in case.iter("property"):
        found.setdefault(p.get("name"), []).append(p.get("value"))
    return found


# ----------------------------------------------------------------------------- registration
def test_plugin_is_loaded_through_its_entry_point(request):
    """The pytest11 entry point: this repository's own test runs have the plugin too."""
    plugin = request.config.pluginmanager.get_plugin("teardown_harness")
    assert plugin is not None and plugin.__name__ == "harness.ci.pytest_plugin"


# ----------------------------------------------------------------------------- collection
def test_one_item_per_step_under_one_node_per_variant(project):
    result = project.runpytest("scenarios/tiny.yaml", "--collect-only", "-q")
    assert result.ret == 0
    assert [line for line in result.outlines if "::" in line] == [f"scenarios/tiny.yaml::{n}" for n in ALL]
    tree = project.runpytest("scenarios/tiny.yaml", "--collect-only")
    tree.stdout.fnmatch_lines(["*<ScenarioFile tiny.yaml>", "*<VariantRun without_fix>", "*<StepItem greedy>",
                               "*<StepItem seeded>", "*<StepItem third>", "*<VariantRun with_fix>"])


def test_repeats_are_nodes_of_their_own(project):
    (project.path / "scenarios" / "tiny.yaml").write_text(TINY.replace("baseline:", "repeat: 2\nbaseline:"))
    result = project.runpytest("scenarios/tiny.yaml", "--collect-only", "-q", "-k", "greedy")
    ids = [line for line in result.outlines if "::" in line]
    assert ids == ["scenarios/tiny.yaml::without_fix-r0::greedy", "scenarios/tiny.yaml::without_fix-r1::greedy",
                   "scenarios/tiny.yaml::with_fix-r0::greedy", "scenarios/tiny.yaml::with_fix-r1::greedy"]


def test_only_the_yaml_asked_for_is_collected(project):
    """`pytest tests/` must not pick up deliberately broken scenarios under tests/data/, nor any other
    YAML; a file named on the command line, a scenarios/ directory, or the ini globs are asked for."""
    project.makepyfile(**{"tests/test_plain": "def test_plain():\n    pass\n"})
    bad = project.path / "tests" / "data" / "bad_scenarios"
    bad.mkdir(parents=True)
    (bad / "unknown_key.yaml").write_text("version: 1\nsteps: [{name: a}]\nvariants: {v: {profile: bare}}\nbogus: 1\n")
    (project.path / "ci.yaml").write_text("steps:\n  - command: make\n")
    (project.path / "tiny_elsewhere.yaml").write_text(TINY)

    tests_only = project.runpytest("tests", "--collect-only", "-q")
    assert tests_only.ret == 0
    assert [line for line in tests_only.outlines if "::" in line] == ["tests/test_plain.py::test_plain"]

    everything = project.runpytest("--collect-only", "-q")  # rootdir: no scenario collected implicitly
    assert [line for line in everything.outlines if "::" in line] == ["tests/test_plain.py::test_plain"]

    explicit = project.runpytest("tests/data/bad_scenarios/unknown_key.yaml", "--collect-only", "-q")
    assert explicit.ret == pytest.ExitCode.INTERRUPTED  # a collection error, reported in one line
    explicit.stdout.fnmatch_lines(["*unknown_key.yaml: bogus: unknown key*"])
    assert "Traceback" not in explicit.stdout.str()

    not_a_scenario = project.runpytest("ci.yaml", "--collect-only", "-q")
    assert not_a_scenario.ret != 0 and "::" not in not_a_scenario.stdout.str()

    named = project.runpytest("tiny_elsewhere.yaml", "scenarios", "--collect-only", "-q")
    assert len([line for line in named.outlines if "::" in line]) == 12

    project.makeini(INI + "harness_scenarios = scenarios/*.yaml\n")
    by_ini = project.runpytest(".", "--collect-only", "-q")
    ids = [line for line in by_ini.outlines if "::" in line]
    assert ids[0] == "scenarios/tiny.yaml::without_fix::greedy" and len(ids) == 7
    assert not any("bad_scenarios" in i or "elsewhere" in i for i in ids)


def test_an_invalid_scenario_is_one_collection_error(project):
    (project.path / "scenarios" / "broken.yaml").write_text(TINY.replace("profile: fixed", "profile: fixd"))
    result = project.runpytest("scenarios")
    result.stdout.fnmatch_lines(["*broken.yaml: variants.with_fix.profile: 'fixd' is not valid; did you mean 'fixed'?*"])
    assert "Traceback" not in result.stdout.str()
    assert result.ret == pytest.ExitCode.INTERRUPTED


# ----------------------------------------------------------------------------- results
def test_each_step_is_a_result_and_the_junit_carries_the_harness_cases(project):
    result = project.runpytest("scenarios/tiny.yaml", "-v", "--junitxml=out.xml")
    assert outcomes(result) == {"without_fix::greedy": "PASSED", "without_fix::seeded": "FAILED",
                                "without_fix::third": "FAILED", "with_fix::greedy": "PASSED",
                                "with_fix::seeded": "PASSED", "with_fix::third": "PASSED"}
    result.assert_outcomes(passed=4, failed=2)
    # the harness's report of the failure, not a traceback through the plugin
    result.stdout.fnmatch_lines(["*_ without_fix::seeded _*",
                                 "vram_construction in construct: ValueError: Free memory on device cuda:0 *",
                                 "",
                                 "culprit: greedy (held * GiB after del_llm, * GiB after gc_collect; *)"])
    assert "pytest_plugin.py" not in result.stdout.str()
    # each failure's traceback once (in the worker's log of the step), not again above it
    seeded = result.stdout.str().split("_ without_fix::seeded _")[1].split("_ without_fix::third _")[0]
    assert seeded.count("Traceback (most recent call last)") == 1, seeded
    # the session's verdict, from the (variant, repeat) runs merged into one run directory
    result.stdout.fnmatch_lines(["*teardown harness verdicts*", "tiny: fix confirmed (exit 0) - */report.md"])

    cases = junit_cases(project.path / "out.xml")
    assert list(cases) == [f"scenarios.tiny.yaml.{n}" for n in ALL]  # classname <file>.<variant>, name <step>
    failed = cases["scenarios.tiny.yaml.without_fix::seeded"]
    p = props(failed)
    assert p["failure_class"] == ["vram_construction"] and p["phase"] == ["construct"]
    assert p["variant"] == ["without_fix"] and p["teardown_profile"] == ["bare"] and p["backend"] == ["sim"]
    assert failed.find("failure").get("message").startswith("vram_construction in construct: ValueError: Free memory")
    assert p["culprit_step"] == ["greedy"] and int(p["culprit_held_after_gc_collect_bytes"][0]) > 0
    passed = props(cases["scenarios.tiny.yaml.with_fix::seeded"])
    assert passed["failure_class"] == ["none"]
    assert int(passed["mem_after_construct_bytes"][0]) > int(passed["mem_before_construct_bytes"][0])
    assert {"construct_s", "teardown_s", "action_wait_memory_s", "release_latency_s"} <= set(passed)
    run_dir = Path(passed["run_dir"][0])
    assert (run_dir / "with_fix.xml").is_file() and json.loads((run_dir / "run.json").read_text())["matrix"] == [
        ["with_fix", 0]]

    # the harness's own JUnit reader sees the classes (as `run.py diff` would on CI's upload)
    read = {c.name: c for c in read_cases(project.path / "out.xml") if "without_fix" in c.classname}
    assert read["seeded"].outcome is Outcome.FAILED
    assert read["seeded"].failure_class is FailureClass.VRAM_CONSTRUCTION


def test_k_selects_variants_and_steps(project):
    variant = project.runpytest("scenarios/tiny.yaml", "-v", "-k", "with_fix and not without_fix")
    assert set(outcomes(variant)) == {"with_fix::greedy", "with_fix::seeded", "with_fix::third"}
    variant.assert_outcomes(passed=3, deselected=3)

    step = project.runpytest("scenarios/tiny.yaml", "-v", "-k", "third", "--junitxml=out.xml")
    assert outcomes(step) == {"without_fix::third": "FAILED", "with_fix::third": "PASSED"}
    # the selected step still ran after the scenario's earlier steps: that is what makes it fail
    assert list(junit_cases(project.path / "out.xml")) == ["scenarios.tiny.yaml.without_fix::third",
                                                           "scenarios.tiny.yaml.with_fix::third"]
    run_dir = Path(props(junit_cases(project.path / "out.xml")["scenarios.tiny.yaml.with_fix::third"])["run_dir"][0])
    assert [c.name for c in read_cases(run_dir / "with_fix.xml")] == ["greedy", "seeded", "third"]

    negated = project.runpytest("scenarios/tiny.yaml", "-v", "-k", "not greedy")
    assert set(outcomes(negated)) == {n for n in ALL if not n.endswith("greedy")}

    by_profile = project.runpytest("scenarios/tiny.yaml", "-q", "-m", "scenario(profile='fixed')")
    by_profile.assert_outcomes(passed=3, deselected=3)


def test_steps_after_a_crash_are_skipped(project):
    (project.path / "scenarios" / "tiny.yaml").write_text(
        TINY.replace("with_fix: {profile: fixed}",
                     "with_fix: {profile: fixed, inject: {crash: {step: seeded, phase: workload}}}"))
    result = project.runpytest("scenarios/tiny.yaml", "-v", "-k", "with_fix and not without_fix", "-rs")
    assert outcomes(result) == {"with_fix::greedy": "PASSED", "with_fix::seeded": "FAILED",
                                "with_fix::third": "SKIPPED"}
    result.stdout.fnmatch_lines(["crash in workload: *"])


def test_a_harness_error_is_one_line_per_step(project):
    (project.path / "not_a_dir").write_text("")
    result = project.runpytest("scenarios/tiny.yaml", "-k", "with_fix and greedy", "--harness-out", "not_a_dir")
    result.assert_outcomes(errors=1, deselected=5)
    result.stdout.fnmatch_lines(["InfrastructureError: *not_a_dir*"])
    assert "Traceback" not in result.stdout.str() and "During handling" not in result.stdout.str()


# ----------------------------------------------------------------------------- pytest-xdist
def test_with_xdist_each_variant_runs_once_on_one_worker(project):
    result = project.runpytest_subprocess("scenarios/tiny.yaml", "-n", "2", "-v", "--junitxml=out.xml")
    assert outcomes(result) == {"without_fix::greedy": "PASSED", "without_fix::seeded": "FAILED",
                                "without_fix::third": "FAILED", "with_fix::greedy": "PASSED",
                                "with_fix::seeded": "PASSED", "with_fix::third": "PASSED"}
    result.stdout.fnmatch_lines(["*scheduling tests via ScenarioScheduling*"])
    cases = junit_cases(project.path / "out.xml")
    assert len(cases) == 6
    by_variant: dict[str, set[tuple[str, str]]] = {}
    for case in cases.values():
        p = props(case)
        by_variant.setdefault(p["variant"][0], set()).add((p["xdist_worker"][0], p["run_dir"][0]))
    # every step of a variant comes from one run, on one worker; the two variants ran side by side
    assert all(len(runs) == 1 for runs in by_variant.values())
    assert {w for runs in by_variant.values() for w, _ in runs} == {"gw0", "gw1"}
    assert props(cases["scenarios.tiny.yaml.without_fix::seeded"])["failure_class"] == ["vram_construction"]
    result.stdout.fnmatch_lines(["tiny: fix confirmed (exit 0) - */report.md"])


def test_with_xdist_k_selects_steps(project):
    result = project.runpytest_subprocess("scenarios/tiny.yaml", "-n", "2", "-v", "-k", "seeded")
    assert outcomes(result) == {"without_fix::seeded": "FAILED", "with_fix::seeded": "PASSED"}
    result.assert_outcomes(passed=1, failed=1)  # xdist's workers deselect; the controller does not count them


def test_other_tests_keep_xdist_default_scheduling(project):
    project.makepyfile(test_plain=textwrap.dedent("""\
        import pytest
        @pytest.mark.parametrize("i", range(4))
        def test_plain(i):
            pass
    """))
    result = project.runpytest_subprocess("test_plain.py", "-n", "2")
    result.assert_outcomes(passed=4)
    assert "ScenarioScheduling" not in result.stdout.str()
