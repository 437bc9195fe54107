"""The simulated device backend, driven by the real teardown actions and profiles.

With a release delay the three built-in profiles must behave as on an MI250: `bare` keeps the
engine's memory (the next construction fails), `legacy` gives it back lazily (the next construction,
right after, fails), `fixed` waits it out (the next construction passes).
"""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from harness.worker import teardown
from harness.backends import load
from harness.backends.sim import SimBackend, SimLLM
from harness.device.probes import VISIBLE_ENV
from harness.scenario.schema import BUILTIN_PROFILES
from harness.sim.ledger import GIB, Ledger
from tests.fixtures import ROOT

UTIL = 0.9
DELAY = 0.8  # the release delay: long enough that "right after the release" is still inside it
ENGINE = {"model": "facebook/opt-125m", "gpu_memory_utilization": UTIL, "seed": 0}
BASELINE = GIB // 2
HELD = BASELINE + int(UTIL * 64 * GIB)  # baseline + what one engine takes on a 64 GiB GCD
STARTUP_FAILURE = (r"Free memory on device cuda:0 \(\d+\.\d\d/64\.00 GiB\) on startup is less than desired "
                   r"GPU memory utilization \(0\.9, 57\.60 GiB\)\. Decrease GPU memory utilization or reduce "
                   r"GPU memory used by other processes\.")


@pytest.fixture(autouse=True)
def _isolated():
    """No pinning from the environment, and no engine left frozen for the next test."""
    saved = {v: os.environ.pop(v) for v in VISIBLE_ENV if v in os.environ}
    yield
    gc.unfreeze()
    gc.collect()
    os.environ.update(saved)


def make_plan(tmp_path, devices=(0,), inject=None, **sim):
    return {"backend": "sim", "platform": "rocm", "devices": list(devices), "ledger": str(tmp_path / "ledger.json"),
            "inject": inject or {}, "sim": {"total_gib": 64.0, "baseline_gib": 0.5, "count": 8, **sim}}


def context(backend, devices=(0,)) -> teardown.TeardownContext:
    return teardown.TeardownContext(llm=None, backend=backend, probe=backend.probe(), devices=list(devices),
                                    gpu_memory_utilization=UTIL)


def build_and_tear_down(backend, profile: str) -> tuple[teardown.TeardownContext, float]:
    """One step: construct, then the profile's actions as the worker runs them; (context, seconds)."""
    ctx = context(backend)
    ctx.llm = backend.construct(dict(ENGINE))  # the only reference, as in the worker
    assert ctx.used() == [(HELD, 64 * GIB)]
    start = time.monotonic()
    for action in BUILTIN_PROFILES[profile].after:
        teardown.run_action(ctx, action.to_dict())
    return ctx, time.monotonic() - start


# ---------------------------------------------------------------------- the three profiles
def test_bare_keeps_the_memory_so_the_next_construction_fails(tmp_path):
    backend = SimBackend(make_plan(tmp_path, release_delay_s=DELAY))
    ctx, _ = build_and_tear_down(backend, "bare")  # del llm; gc.collect()
    assert ctx.used() == [(HELD, 64 * GIB)], "gc.collect() does not see the frozen engine"
    with pytest.raises(ValueError, match=STARTUP_FAILURE):
        backend.construct(dict(ENGINE))
    time.sleep(DELAY + 0.1)
    with pytest.raises(ValueError, match=STARTUP_FAILURE):  # however long one waits
        backend.construct(dict(ENGINE))
    gc.unfreeze()
    gc.collect()  # only now is the cycle collected and the memory given back (lazily)
    assert ctx.used() == [(HELD, 64 * GIB)]
    time.sleep(DELAY + 0.05)
    assert ctx.used() == [(BASELINE, 64 * GIB)]


def test_legacy_releases_lazily_so_the_next_construction_fails(tmp_path):
    backend = SimBackend(make_plan(tmp_path, release_delay_s=DELAY))
    ctx, _ = build_and_tear_down(backend, "legacy")  # del llm; cleanup_dist_env_and_memory()
    ledger = Ledger(tmp_path / "ledger.json")
    assert [e["how"] for e in ledger.entries().values()] == ["release"], "given back by the collector"
    assert ctx.used() == [(HELD, 64 * GIB)], "but not yet free"
    with pytest.raises(ValueError, match=STARTUP_FAILURE):
        backend.construct(dict(ENGINE))
    time.sleep(DELAY + 0.05)
    ctx.llm = backend.construct(dict(ENGINE))  # after the delay there is room again
    ctx.llm.llm_engine.engine_core.shutdown()


def test_legacy_passes_when_memory_comes_back_at_once(tmp_path):
    backend = SimBackend(make_plan(tmp_path, release_delay_s=0.0))
    build_and_tear_down(backend, "legacy")
    llm = backend.construct(dict(ENGINE))
    llm.llm_engine.engine_core.shutdown()


def test_fixed_waits_out_the_delay_so_the_next_construction_passes(tmp_path):
    backend = SimBackend(make_plan(tmp_path, release_delay_s=DELAY))
    ctx, seconds = build_and_tear_down(backend, "fixed")  # shutdown; del; cleanup; wait_memory
    assert DELAY - 0.05 <= seconds < 10.0, "wait_memory waited for the lazy release"
    assert ctx.used() == [(BASELINE, 64 * GIB)]
    llm = backend.construct(dict(ENGINE))
    assert llm.generate(["Hello, my name is"], {"temperature": 0.0, "max_tokens": 4})[0]["completions"]


def test_injected_lazy_release_adds_to_the_device_delay(tmp_path):
    backend = SimBackend(make_plan(tmp_path, inject={"lazy_release": {"seconds": DELAY}}, release_delay_s=0.0))
    assert backend.release_delay_s == pytest.approx(DELAY)
    ctx, _ = build_and_tear_down(backend, "legacy")
    with pytest.raises(ValueError, match=STARTUP_FAILURE):
        backend.construct(dict(ENGINE))
    teardown.wait_memory(ctx, {"timeout_s": 5.0})
    backend.construct(dict(ENGINE)).llm_engine.engine_core.shutdown()


# ---------------------------------------------------------------------- the mechanism
def test_engine_lives_in_a_frozen_cycle(tmp_path):
    backend = SimBackend(make_plan(tmp_path))
    probe = backend.probe()
    llm = backend.construct(dict(ENGINE))
    assert isinstance(llm, SimLLM) and llm.llm_engine.llm is llm
    del llm
    gc.collect()
    assert probe.read([0]) == [(HELD, 64 * GIB)]
    backend.cleanup_dist_env()  # gc.unfreeze(); gc.collect()
    assert probe.read([0]) == [(BASELINE, 64 * GIB)]


def test_shutdown_is_idempotent_and_ends_generation(tmp_path):
    backend = SimBackend(make_plan(tmp_path))
    llm = backend.construct(dict(ENGINE))
    core = llm.llm_engine.engine_core
    core.shutdown()
    core.shutdown()
    assert backend.probe().read([0]) == [(BASELINE, 64 * GIB)]
    with pytest.raises(RuntimeError, match="shut down"):
        backend.generate(llm, ["Hello"], {})
    del llm, core
    backend.cleanup_dist_env()  # the finalizer finds nothing left to give back
    assert backend.probe().read([0]) == [(BASELINE, 64 * GIB)]


def test_killed_engine_process_memory_comes_back_after_the_delay(tmp_path):
    plan = make_plan(tmp_path, release_delay_s=DELAY)
    code = """
        import json, sys, time
        from harness.backends.sim import SimBackend
        llm = SimBackend(json.loads(sys.argv[1])).construct({"gpu_memory_utilization": 0.9})
        print("ready", flush=True)
        time.sleep(60)
    """
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), json.dumps(plan)],
                             env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        backend = SimBackend(plan)
        assert backend.probe().read([0]) == [(HELD, 64 * GIB)]
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        with pytest.raises(ValueError, match=STARTUP_FAILURE):
            backend.construct(dict(ENGINE))  # dead, but its memory is not back yet
        time.sleep(DELAY + 0.05)
        assert backend.probe().read([0]) == [(BASELINE, 64 * GIB)]
        backend.construct(dict(ENGINE)).llm_engine.engine_core.shutdown()
    finally:
        child.kill()
        child.wait()


# ---------------------------------------------------------------------- devices
def test_two_devices_are_independent(tmp_path):
    on0 = SimBackend(make_plan(tmp_path, devices=[0]))
    on1 = SimBackend(make_plan(tmp_path, devices=[1]))
    held0 = on0.construct(dict(ENGINE))
    held1 = on1.construct(dict(ENGINE))  # device 0 being full does not matter to device 1
    assert on0.probe().read([0, 1]) == [(HELD, 64 * GIB)] * 2
    held0.llm_engine.engine_core.shutdown()
    assert on0.probe().read([0, 1]) == [(BASELINE, 64 * GIB), (HELD, 64 * GIB)]
    both = SimBackend(make_plan(tmp_path, devices=[0, 1]))
    with pytest.raises(ValueError, match=r"Free memory on device cuda:1 \("):
        both.construct({**ENGINE, "tensor_parallel_size": 2})
    assert both.probe().read([0]) == [(BASELINE, 64 * GIB)], "a failed start-up takes nothing"
    held1.llm_engine.engine_core.shutdown()
    tp2 = both.construct({**ENGINE, "tensor_parallel_size": 2})
    assert both.probe().read([0, 1, 2]) == [(HELD, 64 * GIB)] * 2 + [(BASELINE, 64 * GIB)]
    tp2.llm_engine.engine_core.shutdown()


def test_hip_visible_devices_maps_logical_to_physical(tmp_path, monkeypatch):
    monkeypatch.setenv("HIP_VISIBLE_DEVICES", "3")
    backend = SimBackend(make_plan(tmp_path, devices=[0]))
    llm = backend.construct(dict(ENGINE))
    ledger = Ledger(tmp_path / "ledger.json")
    assert ledger.used(3) == HELD and ledger.used(0) == BASELINE
    assert backend.probe().read([0]) == [(HELD, 64 * GIB)]
    with pytest.raises(ValueError, match=STARTUP_FAILURE):  # vLLM names the logical device: cuda:0
        backend.construct(dict(ENGINE))
    llm.llm_engine.engine_core.shutdown()
    monkeypatch.setenv("HIP_VISIBLE_DEVICES", "1,2")
    with pytest.raises(ValueError, match="not among the visible devices"):
        backend.probe().read([2])


def test_startup_failure_message_is_vllms(tmp_path):
    backend = SimBackend(make_plan(tmp_path))
    llm = backend.construct(dict(ENGINE))
    with pytest.raises(ValueError) as info:
        backend.construct(dict(ENGINE))
    assert str(info.value) == (
        "Free memory on device cuda:0 (5.90/64.00 GiB) on startup is less than desired GPU memory utilization "
        "(0.9, 57.60 GiB). Decrease GPU memory utilization or reduce GPU memory used by other processes.")
    llm.llm_engine.engine_core.shutdown()


def test_no_room_for_the_cache_blocks(tmp_path):
    backend = SimBackend(make_plan(tmp_path, weights_gib=10.0))
    with pytest.raises(ValueError, match=r"^No available memory for the cache blocks\. Try increasing "
                                         r"`gpu_memory_utilization` when initializing the engine\.$"):
        backend.construct({"gpu_memory_utilization": 0.1})
    assert backend.probe().read([0]) == [(BASELINE, 64 * GIB)]


def test_construct_waits_for_the_engine_build(tmp_path):
    backend = SimBackend(make_plan(tmp_path, construct_s=0.2))
    start = time.monotonic()
    backend.construct(dict(ENGINE)).llm_engine.engine_core.shutdown()
    assert time.monotonic() - start >= 0.2


# ---------------------------------------------------------------------- the rest of the protocol
def test_loaded_by_plan_and_reports_info(tmp_path):
    backend = load(make_plan(tmp_path, device_name="Simulated GCD"))
    assert isinstance(backend, SimBackend) and backend.name == "sim"
    info = backend.info()
    assert info["platform"] == "rocm" and info["device_name"] == "Simulated GCD"
    assert (info["vllm_version"], info["torch_version"], info["probe"]) == ("sim", "none", "sim")
    assert info["python"].count(".") == 2
    assert backend.probe().name == "sim" and backend.probe().device_name(0) == "Simulated GCD"
    backend.empty_cache()


def test_generate_gives_normalised_outputs(tmp_path):
    backend = SimBackend(make_plan(tmp_path))
    llm = backend.construct(dict(ENGINE))
    outs = backend.generate(llm, ["Hello, my name is", "The capital of France is"],
                            {"temperature": 0.0, "max_tokens": 8, "logprobs": 1, "n": 2})
    assert [o["prompt"] for o in outs] == ["Hello, my name is", "The capital of France is"]
    assert all(len(o["completions"]) == 2 for o in outs)
    assert outs == llm.generate(["Hello, my name is", "The capital of France is"],
                                {"temperature": 0.0, "max_tokens": 8, "logprobs": 1, "n": 2})
    llm.llm_engine.engine_core.shutdown()
