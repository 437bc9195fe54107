"""Scenario loading: valid files become frozen typed objects; the shipped scenarios validate."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from harness.scenario import schema as scenario
from harness.errors import ScenarioError
from tests.fixtures import ROOT



def _write(tmp_path, text: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(text))
    return path


MINIMAL = """
    version: 1
    variants: {a: {profile: legacy}, b: {profile: fixed}}
    steps:
      - name: one
        workload: {prompts: ["hi"], sampling: [{temperature: 0.0, max_tokens: 4}, {seed: 1, max_tokens: 4}], runs: 2}
        expect: [identical_runs, {distinct: true}]
"""


@pytest.mark.parametrize("path", sorted((ROOT / "scenarios").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_scenarios_validate(path):
    sc = scenario.load(path)
    assert (sc.steps or sc.pytest) and sc.variants


def test_sampler_mi250_is_the_suite_as_mi250_runs_it():
    sc = scenario.load(ROOT / "scenarios/sampler_mi250.yaml")
    assert sc.platform == "rocm" and len(sc.steps) >= 8
    assert sc.defaults["gpu_memory_utilization"] == 0.92 and sc.defaults["enforce_eager"] is True
    assert [(v.name, v.profile) for v in sc.variants] == [("without_fix", "legacy"), ("with_fix", "fixed")]
    assert {s.engine["model"] for s in sc.steps} >= {"facebook/opt-125m", "distilbert/distilgpt2"}


def test_minimal_scenario_defaults_and_frozen_objects(tmp_path):
    sc = scenario.load(_write(tmp_path, MINIMAL))
    assert sc.name == "s" and sc.platform == "any" and sc.backend == "vllm" and sc.repeat == 1
    assert sc.baseline == "a"
    step = sc.steps[0]
    assert step.workload.sampling[1] == {"seed": 1, "max_tokens": 4}
    assert step.expect == {"identical_runs": True, "distinct": True}
    with pytest.raises(dataclasses.FrozenInstanceError):
        step.name = "other"
    with pytest.raises(TypeError):
        step.engine["model"] = "x"  # read-only mapping


def test_builtin_profiles_are_the_documented_sequences():
    names = {p: [a.name for a in prof.after] for p, prof in scenario.BUILTIN_PROFILES.items()}
    assert names["bare"] == ["del_llm", "gc_collect"]
    # upstream's VllmRunner.__exit__ at 9aaf83ef: shutdown (errors ignored), del, cleanup
    assert names["legacy"] == ["engine_core_shutdown", "del_llm", "cleanup_dist_env"]
    assert dict(scenario.BUILTIN_PROFILES["legacy"].after[0].params) == {"ignore_errors": True}
    assert names["fixed"] == ["engine_core_shutdown", "del_llm", "cleanup_dist_env", "wait_memory"]
    assert dict(scenario.BUILTIN_PROFILES["fixed"].after[-1].params)["timeout_s"] == 120
    settle = scenario.BUILTIN_PROFILES["settle"]
    assert names["settle"] == ["engine_core_shutdown", "del_llm", "dynamo_reset", "cleanup_dist_env", "wait_memory"]
    assert settle.after[0].params["timeout_s"] == 60
    assert dict(settle.after[-1].params) == dict(settle.before[0].params) == \
        {"threshold": "auto", "timeout_s": 240, "stable_s": 2, "floor_bytes": 4 << 30}
    assert names["native"] == [] and not scenario.BUILTIN_PROFILES["native"].before


def test_custom_profile_with_params(tmp_path):
    sc = scenario.load(_write(tmp_path, MINIMAL + """
    teardown_profiles:
      mine:
        before: [{wait_memory: {threshold: 0.2, poll_s: 0.1}}]
        after: [del_llm, {sleep: {seconds: 1}}, {wait_memory: {threshold: 1073741824}}]
    """))
    prof = sc.profiles["mine"]
    assert prof.before[0].params == {"threshold": 0.2, "poll_s": 0.1}
    assert prof.after[2].params["threshold"] == 1 << 30


def test_unknown_key_names_path_and_nearest_key(tmp_path):
    text = MINIMAL.replace("max_tokens: 4", "max_token: 4")
    with pytest.raises(ScenarioError) as err:
        scenario.load(_write(tmp_path, text))
    msg = str(err.value)
    assert "steps[0].workload.sampling[0].max_token" in msg and "did you mean 'max_tokens'" in msg


def test_expectation_needing_two_runs_is_refused(tmp_path):
    with pytest.raises(ScenarioError, match=r"steps\[0\].expect.identical_runs: needs workload.runs >= 2"):
        scenario.load(_write(tmp_path, MINIMAL.replace("runs: 2", "runs: 1")))


# --------------------------------------------------------------------------- validate, in one pass
def test_validate_checks_builtin_model_names_and_suggests_the_nearest(tmp_path, capsys):
    from harness import cli

    path = _write(tmp_path, MINIMAL.replace("version: 1", "version: 1\n    defaults: {model: 'builtin:tiny-lama'}"))
    assert cli.main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: defaults.model: no built-in model 'builtin:tiny-lama'; did you mean 'builtin:tiny-llama'?" in err


def test_validate_reports_every_mistake_of_a_file_in_one_pass(tmp_path, capsys):
    from harness import cli

    path = _write(tmp_path, """
        version: 1
        platfrom: rocm
        timeouts: {step: -1}
        variants: {a: {profile: legacyy}, b: {profile: fixed}}
        steps:
          - name: one
            retries: 3
            workload: {prompts: ["hi"], sampling: [{temperature: 0.0, max_tokens: 0}]}
          - {name: two, engine: {model: 'builtin:tiny'}}
    """)
    assert cli.main(["validate", str(path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert [ln.split(": ")[2] for ln in lines] == ["platfrom", "timeouts.step", "variants.a.profile",
                                                     "steps[0].retries", "steps[0].workload.sampling[0].max_tokens",
                                                     "steps[1].engine.model"], lines
    assert all(ln.startswith(f"error: {path}: ") for ln in lines)
    assert "did you mean 'platform'?" in lines[0] and "did you mean 'legacy'?" in lines[2]
    # only a close name is offered: 'retries' is nothing like 'timeout_s'
    assert "did you mean" not in lines[3] and "(valid: name, engine, workload, expect, timeout_s)" in lines[3]


def test_strict_platform_on_a_machine_without_it_is_the_machines_problem_exit_3(tmp_path, capsys, monkeypatch):
    from harness import cli

    monkeypatch.setenv("HARNESS_PLATFORM", "cpu")
    path = _write(tmp_path, MINIMAL.replace("version: 1", "version: 1\n    platform: rocm"))
    assert cli.main([str(path), "--strict-platform", "--out", str(tmp_path / "out")]) == 3
    assert "scenario needs 'rocm' but this machine is 'cpu' (--strict-platform)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_validate_reports_every_problem_with_this_machine_in_one_pass_too(tmp_path, capsys):
    from harness import cli

    path = _write(tmp_path, MINIMAL.replace("version: 1", "version: 1\n    backend: sim\n    defaults: {model: ./nowhere}")
                  .replace("b: {profile: fixed}", "b: {profile: fixed, python: /no/such/python}"))
    assert cli.main(["validate", str(path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2, lines
    assert "variants.b.python: interpreter '/no/such/python' does not exist" in lines[0]
    assert "defaults.model: model path './nowhere' does not exist" in lines[1]


def test_one_mistake_is_one_line_however_much_depends_on_it(tmp_path, capsys):
    """A typo'd required key is not also "missing"; a wrong variant or step is still there to be
    named by the baseline and by a fault aimed at it."""
    from harness import cli

    cases = {
        "varaints: {a: {profile: legacy}}\nsteps: [{name: s1}]": "varaints: unknown key; did you mean 'variants'?",
        "variants: {a: {profile: legacyy}}\nbaseline: a\nsteps: [{name: s1}]": "variants.a.profile:",
        ("variants: {a: {profile: legacy, inject: {crash: {step: s1, phase: workload}}}}\n"
         "steps: [{name: s1, workload: {prompts: [hi], sampling: [{temperature: -1}]}}]"):
            "steps[0].workload.sampling[0].temperature: -1 is out of range",
    }
    for body, said in cases.items():
        path = tmp_path / "s.yaml"
        path.write_text("version: 1\nbackend: sim\n" + body + "\n")
        assert cli.main(["validate", str(path)]) == 2
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 1 and said in lines[0], lines
