"""NVLink multicast stays off in every worker environment (harness.multicast): a variant cannot turn
it on (refused at load), the caller's environment cannot either (overridden, and the plan says so),
and the harness's real worker process sees it off."""

from __future__ import annotations

import json
import textwrap
from types import MappingProxyType

import pytest
from junitparser import JUnitXml

from harness import cli
from harness.multicast import MULTICAST_OFF
from harness.run import plan
from harness.scenario import schema
from harness.scenario.schema import Variant

SPY = textwrap.dedent("""\
    import json, os
    from pathlib import Path

    def record(ctx):
        keys = ("NCCL_NVLS_ENABLE", "TORCH_SYMM_MEM_DISABLE_MULTICAST", "NVSHMEM_DISABLE_NVLS")
        with open(Path(ctx.scenario_dir) / "env.jsonl", "a") as f:
            f.write(json.dumps({k: os.environ.get(k) for k in keys}) + "\\n")
""")

SCENARIO = textwrap.dedent("""\
    version: 1
    name: mc
    platform: cuda
    backend: sim
    sim: {construct_s: 0.01, release_delay_s: 0.01}
    timeouts: {step: 30, worker_start: 30}
    defaults: {model: facebook/opt-125m, gpu_memory_utilization: 0.4}
    teardown_profiles:
      spy: {after: [del_llm, cleanup_dist_env, {call: "spy:record"}]}
    variants:
      plain: {profile: spy}
      says_off: {profile: spy, env: %s}
    steps:
      - name: one
""")


def write(tmp_path, env="{NCCL_NVLS_ENABLE: '0'}"):
    (tmp_path / "spy.py").write_text(SPY)
    path = tmp_path / "mc.yaml"
    path.write_text(SCENARIO % env)
    return path


@pytest.mark.parametrize("var,value", [("NCCL_NVLS_ENABLE", "1"), ("TORCH_SYMM_MEM_DISABLE_MULTICAST", "0"),
                                       ("NVSHMEM_DISABLE_NVLS", "false")])
def test_a_variant_that_turns_multicast_on_is_refused_naming_the_key(tmp_path, capsys, var, value):
    path = write(tmp_path, f"{{{var}: '{value}'}}")
    assert cli.main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"variants.says_off.env.{var}" in err and "NVLink multicast stays off" in err
    assert f"only '{MULTICAST_OFF[var]}' is allowed" in err and "Traceback" not in err


def test_a_variant_may_spell_out_the_safe_values(tmp_path):
    env = "{" + ", ".join(f"{k}: '{v}'" for k, v in MULTICAST_OFF.items()) + "}"
    assert schema.load(write(tmp_path, env)).variant("says_off").env == MULTICAST_OFF


def test_worker_env_keeps_multicast_off_over_the_caller_and_the_variant(tmp_path):
    sc = schema.load(write(tmp_path))
    rp = plan.build(sc, host_platform="cuda")
    # a variant made in code skips the loader's check: the environment still wins
    sneaky = Variant(name="sneaky", profile="spy", env=MappingProxyType({"NCCL_NVLS_ENABLE": "1", "OTHER": "x"}))
    env = plan.worker_env(rp, sneaky, "tok", tmp_path / "l",
                          base={"TORCH_SYMM_MEM_DISABLE_MULTICAST": "0", "NVSHMEM_DISABLE_NVLS": "0"})
    assert {k: env[k] for k in MULTICAST_OFF} == MULTICAST_OFF and env["OTHER"] == "x"


def test_the_callers_setting_is_overridden_and_recorded_as_a_substitution(tmp_path, monkeypatch):
    monkeypatch.setenv("NCCL_NVLS_ENABLE", "1")
    for var in ("TORCH_SYMM_MEM_DISABLE_MULTICAST", "NVSHMEM_DISABLE_NVLS"):
        monkeypatch.delenv(var, raising=False)
    rp = plan.build(schema.load(write(tmp_path)), host_platform="cuda")
    assert [(s.what, s.before, s.after) for s in rp.substitutions if "NVLS" in s.what or "MULTICAST" in s.what] \
        == [("env NCCL_NVLS_ENABLE", "1", "0")]
    monkeypatch.setenv("NCCL_NVLS_ENABLE", "0")  # already off: nothing to say
    assert not plan.build(schema.load(write(tmp_path)), host_platform="cuda").substitutions


def test_the_real_worker_process_sees_multicast_off(tmp_path, monkeypatch):
    monkeypatch.setenv("NCCL_NVLS_ENABLE", "1")
    monkeypatch.setenv("NVSHMEM_DISABLE_NVLS", "0")
    monkeypatch.delenv("TORCH_SYMM_MEM_DISABLE_MULTICAST", raising=False)
    monkeypatch.delenv("HARNESS_SIM_LEDGER", raising=False)
    path = write(tmp_path)
    assert cli.main([str(path), "--out", str(tmp_path / "results")]) == 0
    seen = [json.loads(line) for line in (tmp_path / "env.jsonl").read_text().splitlines()]
    assert seen == [MULTICAST_OFF, MULTICAST_OFF]  # both variants' workers
    run_dir = next((tmp_path / "results" / "mc").iterdir())
    suite = next(iter(JUnitXml.fromfile(str(run_dir / "plain.xml"))))
    subs = [p.value for p in suite.properties() if p.name == "substitution"]
    assert any(s.startswith("env NCCL_NVLS_ENABLE: 1 -> 0 (NVLink multicast stays off") for s in subs)
    assert any(s.startswith("env NVSHMEM_DISABLE_NVLS: 0 -> 1") for s in subs)
