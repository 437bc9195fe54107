"""The pytest-suite mode without vLLM: the `pytest:` block, the checkout, the plan and its
substitutions, the model cache, JUnit names, collection problems, and the replaced __exit__'s
teardown on a stub backend."""

from __future__ import annotations

import gc
import json
import textwrap
import weakref
from pathlib import Path

import pytest

from harness.errors import ScenarioError
from harness.model import FailureClass, Outcome
from harness.results import events as events_mod
from harness.results import junit
from harness.run import plan as planning
from harness.worker import steps as worker_steps, stream as worker_stream
from harness.scenario import schema
from harness.upstream import hfhome, planning as upstream_planning, results
from harness.upstream.builds import Recorder, TaggedEvents
from harness.upstream.plugin import junit_names, missing_module
from tests.fixtures import ROOT



def _scenario(tmp_path, rootdir="${VLLM_SRC}", extra="") -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(f"""\
        version: 1
        name: up
        platform: rocm
        pytest: {{rootdir: "{rootdir}", args: [tests/samplers, -k, "not multimodal"]}}
        variants:
          without_fix: {{profile: legacy}}
          with_fix: {{profile: fixed, engine: {{gpu_memory_utilization: 0.5}}}}
        """) + extra)
    return path


def test_the_shipped_scenario_keeps_the_contract():
    sc = schema.load(ROOT / "scenarios/upstream_samplers_mi250.yaml")
    assert sc.pytest.rootdir == "${VLLM_SRC}" and sc.steps == ()
    assert sc.pytest.args[0] == "tests/samplers" and "not multimodal" in sc.pytest.args
    assert {v.name: v.profile for v in sc.variants} == {"without_fix": "legacy", "with_fix": "fixed"}


def test_rootdir_expands_variables_and_vllm_src_overrides_it(tmp_path):
    sc = schema.load(_scenario(tmp_path))
    (tmp_path / "src").mkdir()
    assert upstream_planning.resolve_rootdir(sc, environ={"VLLM_SRC": str(tmp_path / "src")}) == tmp_path / "src"
    assert upstream_planning.resolve_rootdir(sc, tmp_path, environ={}) == tmp_path
    with pytest.raises(ScenarioError, match=r"pytest.rootdir: .*VLLM_SRC\} is not set; set it or give --vllm-src"):
        upstream_planning.resolve_rootdir(sc, environ={})
    with pytest.raises(ScenarioError, match="pytest.rootdir: --vllm-src .*nope: no such directory"):
        upstream_planning.resolve_rootdir(sc, tmp_path / "nope", environ={})
    relative = schema.load(_scenario(tmp_path, rootdir="src"))
    assert upstream_planning.resolve_rootdir(relative, environ={}) == tmp_path / "src"


def test_the_plan_says_every_substitution_first(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    sc = schema.load(_scenario(tmp_path))
    rplan = planning.build(sc, host_platform="cpu", vllm_src=str(tmp_path))
    said = [str(s) for s in rplan.substitutions]
    for fragment in ("platform: rocm -> cpu", "model: every hub name the tests ask for -> ",
                     "max_position_embeddings: 512 -> 2048", "block_size: not a multiple of 32",
                     "cleanup_fixture: cleanup_dist_env_and_memory() after every test -> off",
                     "env VLLM_TEST_CLEAN_GPU_MEMORY", "env HF_HOME"):
        assert any(fragment in s for s in said), fragment
    variant = sc.variant("with_fix")
    wplan = planning.worker_plan(rplan, variant, 0, events=tmp_path / "run" / "logs" / "e.jsonl", ledger=tmp_path / "l")
    section = wplan["pytest"]
    assert section["rootdir"] == str(tmp_path) and section["hub"]["root"] == str(tmp_path / "run" / "hf_home")
    assert section["engine"] == {"gpu_memory_utilization": 0.5} and section["block_multiple"] == 32
    assert section["env"]["HF_HUB_OFFLINE"] == "1" and section["env"]["VLLM_TEST_CLEAN_GPU_MEMORY"] == "0"
    on_rocm = planning.build(sc, host_platform="rocm", vllm_src=str(tmp_path))
    assert on_rocm.pytest["hub"] is None and on_rocm.pytest["block_multiple"] is None
    with pytest.raises(Exception, match="a pytest suite runs on the real vLLM"):
        planning.build(sc, backend="sim", host_platform="cpu", vllm_src=str(tmp_path))


def test_the_model_cache_resolves_every_hub_name_to_one_model(tmp_path):
    from huggingface_hub import try_to_load_from_cache

    source = tmp_path / "model"
    source.mkdir()
    (source / "config.json").write_text(json.dumps({"max_position_embeddings": 512}))
    (source / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 512}))
    (source / "model.safetensors").write_bytes(b"weights")
    cache = hfhome.HubCache(tmp_path / "hf", source, 2048)
    assert cache.seed_name("distilbert/distilgpt2") and cache.seed_name("meta-llama/Llama-3.2-1B")
    assert not cache.seed_name(str(source)) and not cache.seed_name("./local")
    found = try_to_load_from_cache("distilbert/distilgpt2", "config.json", cache_dir=tmp_path / "hf" / "hub")
    assert json.loads(Path(found).read_text())["max_position_embeddings"] == 2048
    weights = try_to_load_from_cache("meta-llama/Llama-3.2-1B", "model.safetensors", cache_dir=tmp_path / "hf" / "hub")
    assert Path(weights).read_bytes() == b"weights"
    assert hfhome.config_changes(source, 2048) == [("max_position_embeddings", "512", "2048")]
    assert hfhome.config_changes(source, 256) == []


def test_junit_names_are_pytests():
    assert junit_names("tests/samplers/test_logprobs.py::test_ranks[True-True-half-distilbert/distilgpt2]") == \
        ("tests.samplers.test_logprobs", "test_ranks[True-True-half-distilbert/distilgpt2]")
    assert junit_names("tests/samplers/test_no_bad_words.py::TestOneTokenBadWord::test_one_token_bad_word") == \
        ("tests.samplers.test_no_bad_words.TestOneTokenBadWord", "test_one_token_bad_word")
    assert junit_names("tests/x.py::test_y", prefix="nightly") == ("nightly.tests.x", "test_y")


def test_collection_problems_name_the_file_the_module_and_the_versions(tmp_path):
    assert missing_module("E   ModuleNotFoundError: No module named 'tblib'") == "tblib"
    assert missing_module("ImportError: cannot import name 'FlatLogprobs' from 'vllm.logprobs' (/x.py)") == \
        "vllm.logprobs.FlatLogprobs"
    info = {"vllm_version": "0.32.0", "rootdir": "/src/vllm", "checkout_vllm_version": "0.23.1"}
    evs = [{"event": "worker_start", "info": info},
           {"event": "collect_error", "where": "tests/samplers/test_logprobs.py", "classname": "",
            "name": "tests.samplers.test_logprobs", "module": "vllm.logprobs.FlatLogprobs", "text": "ImportError: ..."}]
    (line,) = results.problems(evs, "with_fix", "/venv/bin/python", ["tests/samplers"], tmp_path / "log")
    assert line.startswith("tests/samplers/test_logprobs.py: cannot be collected: vllm.logprobs.FlatLogprobs is missing")
    assert "written for another vLLM" in line and "vLLM 0.32.0" in line and "vLLM 0.23.1" in line
    (case,) = results.extra_cases(evs, tmp_path / "log", "exit status 0")
    assert case.classname == "" and case.step == "tests.samplers.test_logprobs" and case.outcome is Outcome.FAILED
    collected = [{"event": "collected", "tests": [{"name": "t"}]}]
    assert results.planned_steps(evs + collected) == []  # pytest ran nothing
    assert results.planned_steps(evs + collected + [{"event": "step_start"}]) == [{"name": "t"}]
    empty = [{"event": "worker_start", "info": info}, {"event": "collected", "tests": []}]
    assert results.problems(empty, "a", "py", ["-k", "nothing"], tmp_path / "log")[0].startswith(
        "pytest.args: no tests collected with ['-k', 'nothing'] in /src/vllm")
    (died,) = results.problems([{"event": "worker_start", "info": info}], "a", "py", [], tmp_path / "log")
    assert "ended before collecting any test" in died
    assert results.extra_cases([], tmp_path / "log", "killed by SIGKILL")[0].failure_class is FailureClass.CRASH


# ----------------------------------------------------------------------------- the replaced __exit__
class _Probe:
    name = "stub"

    def __init__(self):
        self.used = 1000

    def read(self, devices):
        return [(self.used, 10_000) for _ in devices]

    def device_name(self, device):
        return "stub"


class _Backend:
    name = "stub"

    def __init__(self):
        self._probe = _Probe()
        self.cleanups = 0

    def probe(self):
        return self._probe

    def cleanup_dist_env(self):
        self.cleanups += 1


class _Engine:
    """Holds 'device memory' until it is garbage: what del_llm must really free."""

    def __init__(self, probe):
        self.probe = probe
        probe.used += 5000
        self.llm_engine = type("E", (), {"engine_core": type("C", (), {"shutdown": lambda s: None})()})()

    def __del__(self):
        self.probe.used -= 5000


class _Runner:  # upstream's VllmRunner, as far as __exit__ sees it
    pass


def _recorder(tmp_path, profile: str) -> tuple[Recorder, _Backend, Path]:
    prof = schema.BUILTIN_PROFILES[profile]
    plan = {"variant": "v", "repeat": 0, "devices": [0], "backend": "vllm", "inject": {},
            "profile": {"name": profile, "before": [a.to_dict() for a in prof.before],
                        "after": [a.to_dict() for a in prof.after]},
            "pytest": {"hub": None, "block_multiple": 32, "engine": {"enforce_eager": True}}}
    path = tmp_path / "events.jsonl"
    backend = _Backend()
    tagged = TaggedEvents(worker_stream.Events(str(path), "v", 0))
    return Recorder(plan, worker_steps.StepRunner(plan, tagged, backend), tagged), backend, path


@pytest.mark.parametrize("profile", ["bare", "legacy", "fixed", "settle"])
def test_the_profile_runs_on_the_runners_engine_and_keeps_no_reference(tmp_path, profile):
    rec, backend, path = _recorder(tmp_path, profile)
    step = {"name": "test_a", "index": 0}
    rec.begin_test(step)
    rec.events.emit("step_start", step="test_a", index=0, timeout_s=60, log_offset=0)
    runner, engine = _Runner(), _Engine.__new__(_Engine)  # as vllm.LLM.__init__ sees its `self`
    rec.construct(engine, "VllmRunner", "org/model", 0.5, [], lambda: engine.__init__(backend.probe()))
    runner.llm = engine
    alive = weakref.ref(engine)
    del engine
    rec.teardown(runner, "llm", "VllmRunner")
    gc.collect()
    assert alive() is None and not hasattr(runner, "llm")
    rec.end_test()
    evs = [json.loads(line) for line in path.read_text().splitlines()]
    expected = [a.name for a in schema.BUILTIN_PROFILES[profile].after]
    assert [e["name"] for e in evs if e["event"] == "action"][-len(expected):] == expected
    after_del = next(e for e in evs if e["event"] == "memory" and e["label"] == "after_del_llm")
    # del_llm really frees: nothing else holds the engine (no argument, no local)
    assert after_del["used_bytes"] == 1000 and after_del["build"] == 0
    assert backend.cleanups == ("cleanup_dist_env" in expected)
    _, (res,) = events_mod.collect(evs + [{"t": evs[-1]["t"], "event": "step_end", "index": 0, "step": "test_a",
                                           "outcome": "passed"}], [step], log=tmp_path / "log", stopped=None,
                                   exit_description="")
    props = junit.case_properties(res)
    assert props["engine0_via"] == "VllmRunner" and props["engine0_torn_down_by"] == "VllmRunner"
    assert props["engine0_mem_after_construct_bytes"] == "6000" and props["engine0_mem_after_del_llm_bytes"] == "1000"
    assert {k for k in props if k.startswith("engine0_action_")} == {f"engine0_action_{a}_s" for a in expected}


def test_engine_arguments_are_mapped_and_said(tmp_path):
    rec, _, _ = _recorder(tmp_path, "legacy")
    kwargs, subs = rec.engine_args((), {"model": "org/m", "block_size": 16})
    assert kwargs == {"model": "org/m", "block_size": 32, "enforce_eager": True}
    assert subs == ["enforce_eager: (default) -> True (the variant's engine:)",
                    "block_size: 16 -> 32 (vLLM on CPU: attention needs a multiple of 32)"]
    assert rec.engine_args((), {"block_size": 64})[0]["block_size"] == 64


def test_the_harness_pytest_plugin_skips_a_pytest_suite_scenario_with_the_command_to_use():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "pytest", "scenarios/upstream_samplers_mi250.yaml", "-q", "-rs",
                           "-p", "no:cacheprovider"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "1 skipped" in proc.stdout and "error" not in proc.stdout.lower()
    assert "run.py upstream_samplers_mi250.yaml --vllm-src DIR" in proc.stdout


def test_a_construction_that_fails_for_memory_is_vram_construction(tmp_path):
    rec, _, path = _recorder(tmp_path, "fixed")
    rec.begin_test({"name": "test_b", "index": 0})
    rec.events.emit("step_start", step="test_b", index=0, timeout_s=60, log_offset=0)

    def build():
        raise ValueError("Free memory on device cuda:0 (24.68/255.98 GiB) on startup is less than desired "
                         "GPU memory utilization (0.9, 230.39 GiB).")

    with pytest.raises(ValueError) as info:
        rec.construct(object(), "VllmRunner", "org/m", 0.9, [], build)
    wrapped = RuntimeError("the test wrapped it")
    wrapped.__cause__ = info.value
    assert rec.phase_of(info.value, "call") == rec.phase_of(wrapped, "call") == "construct"
    assert rec.phase_of(AssertionError("x"), "call") == "expect"
    assert rec.phase_of(KeyError("x"), "call") == "workload"
    assert rec.phase_of(OSError("couldn't connect to 'https://huggingface.co'"), "setup") == "construct"
    rec.end_test()
    evs = [json.loads(line) for line in path.read_text().splitlines()]
    start = next(e for e in evs if e["event"] == "engine_start")
    assert start["error"].startswith("ValueError: Free memory on device")
    end = {"t": evs[-1]["t"], "event": "step_end", "index": 0, "step": "test_b", "outcome": "failed",
           "phase": "construct", "error_type": "ValueError", "message": str(info.value), "traceback": ""}
    _, (res,) = events_mod.collect(evs + [end], [{"name": "test_b", "index": 0}], log=tmp_path / "log",
                                   stopped=None, exit_description="")
    assert res.failure_class is FailureClass.VRAM_CONSTRUCTION
    assert junit.case_properties(res)["engine0_error"].startswith("ValueError: Free memory")


def test_tests_that_never_ran_keep_their_pytest_names(tmp_path):
    steps = [{"name": f"test_{i}", "index": i, "classname": "tests.samplers.test_x", "timeout_s": 60} for i in range(3)]
    evs = [{"t": 1.0, "event": "worker_start", "info": {}},
           {"t": 2.0, "event": "step_start", "step": "test_0", "index": 0, "timeout_s": 60, "log_offset": 0}]
    for stopped in ("interrupted", "timeout", None):
        _, res = events_mod.collect(evs, steps, log=tmp_path / "log", stopped=stopped, exit_description="killed")
        assert [(r.classname, r.step) for r in res] == [("tests.samplers.test_x", s["name"]) for s in steps]
        assert [r.outcome for r in res][1:] == [Outcome.SKIPPED, Outcome.SKIPPED]


def test_a_test_that_hangs_after_its_engine_was_built_timed_out_in_the_workload(tmp_path):
    step = {"name": "test_0", "index": 0, "classname": "tests.x", "timeout_s": 60}
    evs = [{"t": 1.0, "event": "step_start", "step": "test_0", "index": 0, "timeout_s": 60, "log_offset": 0},
           {"t": 1.0, "event": "phase_start", "step": "test_0", "index": 0, "phase": "construct", "build": 0},
           {"t": 2.0, "event": "phase_end", "step": "test_0", "index": 0, "phase": "construct", "duration_s": 1.0,
            "build": 0}]
    _, (res,) = events_mod.collect(evs, [step], log=tmp_path / "log", stopped="timeout", exit_description="")
    assert res.failure_class is FailureClass.TIMEOUT and res.message.endswith("in phase workload")
