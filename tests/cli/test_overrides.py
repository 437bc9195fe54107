"""`--set PATH=VALUE`: applied to the raw YAML, validated like the file, recorded in run.json and the
report's substitutions; on run, validate and bisect."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import cli
from harness.errors import InputError, ScenarioError
from harness.scenario import overrides, schema
from tests.fixtures import ROOT
from tests.sim_scenarios import lazy_release

MI250 = ROOT / "scenarios/sampler_mi250.yaml"


def _load(*texts: str, path: Path = MI250) -> schema.Scenario:
    return schema.load(path, overrides.parse_all(list(texts)))


def test_values_are_yaml():
    assert overrides.parse("a.b=2").value == 2
    assert overrides.parse("a=' 2'").value == " 2"
    assert overrides.parse("x={a: 1}").value == {"a": 1}
    assert overrides.parse("x=[1, two]").value == [1, "two"]
    assert overrides.parse("x=").value is None
    assert overrides.parse("x=a=b").value == "a=b"  # only the first '=' splits


@pytest.mark.parametrize("text", ["novalue", "=3", "a..b=1", "x={a: 1"])
def test_a_malformed_setting_is_a_usage_error(text):
    with pytest.raises(InputError, match="--set"):
        overrides.parse(text)


def test_the_issue_examples_apply_to_the_main_job():
    sc = _load("inject.device_model.release_delay_s=2", "defaults.gpu_memory_utilization=0.5",
               "variants.with_fix.profile=settle")
    assert sc.defaults["gpu_memory_utilization"] == 0.5
    assert sc.variant("with_fix").profile == "settle"
    # scenario-wide inject: every variant gets it, so both share one device
    assert all(v.inject["device_model"] == {"release_delay_s": 2} for v in sc.variants)
    keys = {a.key: (a.before, a.after) for a in sc.overrides}
    assert keys["defaults.gpu_memory_utilization"] == ("0.92", "0.5")
    assert keys["variants.with_fix.profile"] == ("fixed", "settle")
    assert keys["variants.without_fix.inject.device_model.release_delay_s"] == ("unset", "2")


def test_a_variant_added_by_set_also_gets_the_scenario_wide_inject():
    sc = _load("inject.device_model.release_delay_s=4", "variants.settle={profile: settle}")
    assert [v.name for v in sc.variants] == ["without_fix", "with_fix", "settle"]
    assert sc.variant("settle").inject["device_model"] == {"release_delay_s": 4}


def test_the_file_is_not_changed_and_a_load_without_sets_is_as_before():
    before = MI250.read_bytes()
    _load("defaults.seed=7")
    assert MI250.read_bytes() == before
    assert schema.load(MI250).defaults["seed"] == 0 and schema.load(MI250).overrides == ()


@pytest.mark.parametrize("text, words", [
    ("variants.with_fx.profile=settle", ["variants.with_fx", "did you mean 'with_fix'", "--set"]),
    ("variants.with_fix.profil=settle", ["variants.with_fix.profil", "did you mean 'profile'",
                                         "from --set variants.with_fix.profil=settle"]),
    ("variants.with_fix.profile=setle", ["variants.with_fix.profile", "did you mean 'settle'",
                                         "from --set variants.with_fix.profile=setle"]),
    ("inject.device_model.release_delay=2", ["inject.device_model.release_delay", "did you mean 'release_delay_s'",
                                             "from --set inject.device_model.release_delay=2"]),
    ("defaults.gpu_memory_utilization=[1]", ["defaults", "from --set"]),
    ("timeouts.step=-1", ["timeouts.step", "out of range", "from --set timeouts.step=-1"]),
    ("steps.99.timeout_s=1", ["steps.99", "not an index"]),
    ("name.x=1", ["is 'sampler_mi250', not a mapping", "--set name.x=1"]),
])
def test_a_bad_setting_is_refused_like_a_bad_file_and_says_it_came_from_set(text, words):
    with pytest.raises(ScenarioError) as e:
        _load(text)
    for w in words:
        assert w in str(e.value), str(e.value)


def test_an_error_elsewhere_in_the_file_is_not_blamed_on_set(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(MI250.read_text().replace("profile: fixed", "profile: fixd"))
    with pytest.raises(ScenarioError) as e:
        _load("defaults.seed=1", path=bad)
    assert "--set" not in str(e.value) and "fixd" in str(e.value)


def test_validate_exits_2_naming_the_key_and_set(capsys):
    assert cli.main(["validate", str(MI250), "--set", "variants.with_fix.profile=setle"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'settle'" in err and "--set variants.with_fix.profile=setle" in err
    assert cli.main(["validate", str(MI250), "--set", "variants.with_fix.profile=settle"]) == 0
    assert cli.main(["validate", str(MI250), "--set", "nokey"]) == 2


def test_bisect_refuses_a_bad_setting_before_building_anything(tmp_path, capsys):
    code = cli.main(["bisect", str(MI250), "--versions", "0.20.0,0.21.0", "--out", str(tmp_path),
                     "--set", "defaults.gpu_memory_utilization=x", "--set", "variants.with_fx.profile=legacy"])
    assert code == 2 and "did you mean 'with_fix'" in capsys.readouterr().err
    assert not (tmp_path / "bisect").exists()


def test_a_run_records_what_set_changed_in_run_json_and_the_report(tmp_path):
    scenario = tmp_path / "set_sim.yaml"
    scenario.write_text(lazy_release("set_sim", ["one", "two"], fixed_profile="legacy"))
    code = cli.main([str(scenario), "--out", str(tmp_path / "out"), "--set", "variants.with_fix.profile=fixed",
                     "--set", "variants.settle={profile: settle}"])
    assert code == 0
    (rd,) = (tmp_path / "out" / "set_sim").iterdir()
    meta = json.loads((rd / "run.json").read_text())
    assert {"key": "variants.with_fix.profile", "before": "legacy", "after": "fixed",
            "from": "variants.with_fix.profile=fixed"} in meta["set"]
    assert meta["profiles"] == {"without_fix": "legacy", "with_fix": "fixed", "settle": "settle"}
    assert any("variants.with_fix.profile: legacy -> fixed (--set" in s for s in meta["substitutions"])
    report = (rd / "report.md").read_text().replace("&gt;", ">")
    assert "variants.settle: unset -> {profile: settle} (--set variants.settle={profile: settle})" in report
    assert json.loads((rd / "summary.json").read_text())["verdict"] == "fix confirmed"
