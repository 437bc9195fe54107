"""The modelled device without vLLM: charges follow objects, settings, schema, planning, the probe."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from harness.devicemodel import charges as charges_mod
from harness.devicemodel import plugin, settings
from harness.devicemodel.probe import DeviceModelProbe, wait_idle
from harness.errors import HarnessError, ScenarioError
from harness.run import plan
from harness.scenario import schema
from harness.sim.ledger import GIB, Ledger
from tests.fixtures import ROOT

MI250 = ROOT / "scenarios/sampler_mi250.yaml"
MODEL = settings.DeviceModel(total_gib=16.0, release_delay_s=0.3, baseline_gib=0.5)


class Tensor:  # stands for a torch tensor: what matters is that it can be weakly referenced
    pass


@pytest.fixture
def own(tmp_path):
    return charges_mod.Charges(Ledger(tmp_path / "ledger.json", MODEL.ledger_config()), MODEL.release_delay_s)


def _used(own) -> int:
    own.flush()
    return own.ledger.used(0)


def test_a_charge_lasts_until_the_last_of_its_objects_is_collected_then_the_delay(own):
    a, b = Tensor(), Tensor()
    own.charge("0", 4 * GIB, "weights", [a, b])
    assert _used(own) == 4 * GIB + GIB // 2
    del a
    assert _used(own) == 4 * GIB + GIB // 2  # b still holds it
    del b
    assert _used(own) == 4 * GIB + GIB // 2  # released, not yet reclaimed
    entry = next(iter(own.ledger.entries().values()))
    assert entry["how"] == "release" and entry["free_at"] is not None
    time.sleep(MODEL.release_delay_s + 0.05)
    assert _used(own) == GIB // 2


def test_a_reference_cycle_holds_the_charge_until_the_collector_runs(own):
    t = Tensor()
    t.me = t
    own.charge("0", GIB, "kv_cache", [t])
    gc.disable()
    try:
        del t
        assert _used(own) == GIB + GIB // 2 and all(e["free_at"] is None for e in own.ledger.entries().values())
    finally:
        gc.enable()
    gc.collect()
    own.flush()
    assert all(e["free_at"] is not None for e in own.ledger.entries().values())


def test_a_finalizer_inside_a_ledger_write_only_queues_its_release(own):
    """The collector may run while this process holds the ledger's lock; a finalizer that wrote
    there would deadlock on its own lock. It queues, and the writer thread writes afterwards."""
    t = Tensor()
    own.charge("0", GIB, "weights", [t])
    with own.ledger._changing():
        del t  # the finalizer runs right here, under the lock
    deadline = time.monotonic() + 5
    while any(e["free_at"] is None for e in own.ledger.entries().values()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert all(e["free_at"] is not None for e in own.ledger.entries().values())


def test_an_object_free_charge_is_released_at_once(own):
    own.charge("0", GIB, "kv_cache", [])
    own.flush()
    assert all(e["free_at"] is not None for e in own.ledger.entries().values())


CHILD = """
import os, signal, sys, time
from harness.devicemodel import charges
from harness.sim.ledger import Ledger
own = charges.for_process(sys.argv[1], {"total_gib": 16.0, "baseline_gib": 0.5, "count": 8}, 0.5)
keep = [object.__new__(type("T", (), {}))]
own.charge("0", 8 << 30, "weights", keep)
pid = os.fork()
if pid == 0:          # a forked child drops its copies of the parent's objects: not its charge
    keep.clear()
    import gc; gc.collect()
    own.flush()
    os._exit(0)
os.waitpid(pid, 0)
print("charged", flush=True)
time.sleep(60)
"""


def test_a_killed_holder_is_released_after_the_delay_and_a_forked_child_releases_nothing(tmp_path):
    path = tmp_path / "ledger.json"
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(CHILD), str(path)], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout.readline().strip() == "charged"
        led = Ledger(path)
        assert led.used(0) == 8 * GIB + GIB // 2  # the fork's collection released nothing
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert led.used(0) == 8 * GIB + GIB // 2  # dead now, reclaimed only after the delay
        (entry,) = led.entries().values()
        assert entry["how"] == "exit"
        time.sleep(0.6)
        assert led.used(0) == GIB // 2
    finally:
        proc.kill()
        proc.wait()


def test_settings_travel_through_the_environment(tmp_path):
    env = {settings.ENV: settings.to_env(MODEL, tmp_path / "l.json")}
    assert settings.from_env(env) == (MODEL, str(tmp_path / "l.json"))
    assert settings.from_env({}) is None
    assert settings.for_platform("rocm") == settings.DeviceModel()  # the MI250 GCD
    assert (settings.DeviceModel().total_gib, settings.DeviceModel().release_delay_s) == (64.0, 8.0)


def test_probe_reads_the_modelled_device_with_host_memory_beside_it(tmp_path, own):
    probe = DeviceModelProbe({settings.ENV: settings.to_env(MODEL, own.ledger.path)})
    assert probe.read([0]) == [(GIB // 2, 16 * GIB)]
    assert probe.host.read([0])[0][0] > 0 and "modelled" in probe.device_name(0)
    t = Tensor()
    own.charge("0", GIB, "weights", [t])
    assert not wait_idle(probe, [0], 0.1)
    del t
    own.flush()
    assert wait_idle(probe, [0], 5)


def test_the_plugin_is_inert_without_a_device_model(monkeypatch):
    monkeypatch.delenv(settings.ENV, raising=False)
    plugin.register()
    assert plugin._originals == {}


# ---------------------------------------------------------------------- schema and plan
def _scenario(tmp_path, inject: str, platform: str = "rocm") -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(f"""
        version: 1
        name: dm
        platform: {platform}
        variants:
          a: {{profile: legacy, inject: {inject}}}
          b: {{profile: fixed}}
        steps: [{{name: one, engine: {{model: "builtin:tiny-llama"}}}}]
    """))
    return path


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setattr(plan, "_tiny_llama", lambda: "/cache/tiny-llama")


def test_a_rehearsal_models_the_scenarios_device_by_default(tiny, tmp_path):
    sc = schema.load(MI250)
    rp = plan.build(sc, host_platform="cpu")
    assert set(rp.device_models) == {"without_fix", "with_fix"}
    assert any(s.what == "device" and "64 GiB, release delay 8 s" in s.after for s in rp.substitutions)
    v = sc.variant("with_fix")
    wp = plan.worker_plan(rp, v, 0, events=tmp_path / "e", ledger=tmp_path / "l")
    assert wp["probe"] == "devicemodel" and wp["device_model"]["total_gib"] == 64.0
    env = plan.worker_env(rp, v, "tok", tmp_path / "l", base={"VLLM_PLUGINS": "other"})
    assert settings.from_env(env)[1] == str(tmp_path / "l")
    assert env["VLLM_PLUGINS"] == f"other,{settings.PLUGIN_NAME}"
    assert plan.build(sc, host_platform="rocm").device_models == {}  # the real device


def test_a_variant_can_turn_it_off_or_set_it(tiny, tmp_path):
    rp = plan.build(schema.load(_scenario(tmp_path, "{device_model: false}")), host_platform="cpu",
                    variants=["a"])
    assert rp.device_models == {}
    env = plan.worker_env(rp, rp.scenario.variant("a"), "t", tmp_path / "l", base={settings.ENV: "{}"})
    assert settings.ENV not in env
    rp = plan.build(schema.load(_scenario(tmp_path, "{device_model: {release_delay_s: 2}}", "cpu")),
                    host_platform="cpu", variants=["a"])
    assert set(rp.device_models) == {"a"} and rp.device_models["a"].release_delay_s == 2.0
    rp = plan.build(schema.load(_scenario(tmp_path, "{lazy_release: {seconds: 3}}")), host_platform="cpu",
                    variants=["a"])
    assert rp.device_models["a"].release_delay_s == 3.0


@pytest.mark.parametrize("inject,host,message", [
    ("{device_model: {total_gib: 16}}", "cuda", "runs under vLLM on CPU only"),
    ("{device_model: {total_gib: 16}}", "cpu", "variants.b.inject.device_model.total_gib: 64 in variant 'b', "
                                               "16 in variant 'a': every variant of a run uses the same device"),
    ("{device_model: {release_delay_s: 0}}", "cpu", "variants.b.inject.device_model.release_delay_s: 8 in variant"),
    ("{lazy_release: {seconds: 3}}", "cpu", "variants.b.inject.device_model.release_delay_s: 8 in variant 'b', "
                                            "3 in variant 'a'"),
    ("{device_model: false}", "cpu", "variant 'b' runs on the modelled device and 'a' does not"),
    ("{device_model: {seed: 3, device_name: X}}", "cpu", "device_model.device_name: 'AMD Instinct MI250X/MI250'"),
    ("{lazy_release: {seconds: 3, step: one}}", "cpu", "inject.lazy_release.step"),
])
def test_plan_refuses_what_the_model_cannot_do(tiny, tmp_path, inject, host, message):
    with pytest.raises(HarnessError) as e:
        plan.build(schema.load(_scenario(tmp_path, inject)), host_platform=host)
    assert message in str(e.value)


def test_variants_may_differ_in_the_seed_only(tiny, tmp_path):
    rp = plan.build(schema.load(_scenario(tmp_path, "{device_model: {seed: 3}}")), host_platform="cpu")
    assert rp.device_models["a"].seed == 3 and rp.device_models["b"].seed == 0


@pytest.mark.parametrize("inject,key", [
    ("{device_model: {total_gb: 16}}", "variants.a.inject.device_model"),
    ("{device_model: {release_delay_s: -1}}", "variants.a.inject.device_model.release_delay_s"),
    ("{device_model: {total_gib: 1, baseline_gib: 2}}", "variants.a.inject.device_model.baseline_gib"),
    ("{device_model: on}", "variants.a.inject.device_model"),
])
def test_bad_device_model_settings_name_the_key(tmp_path, inject, key):
    with pytest.raises(ScenarioError, match=key.replace(".", r"\.")):
        schema.load(_scenario(tmp_path, inject))
