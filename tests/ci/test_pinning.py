"""GPU pinning: which devices each pytest-xdist worker gets (harness.ci.pinning), and, end to end, the
environment that the harness's worker process (the one that builds the engine) really received.

The end-to-end tests run pytest in a subprocess over a tiny simulated scenario whose teardown calls
``envspy:record``, which writes the worker's visible-device variables to a file.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest
from junitparser import JUnitXml, Properties

from harness.ci import pinning
from harness.errors import InputError
from harness.multicast import MULTICAST_OFF
from harness.device.probes import VISIBLE_ENV

pytest_plugins = ["pytester"]

SPY = """\
import json, os
from pathlib import Path

def record(ctx):
    env = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES",
                                         "PYTEST_XDIST_WORKER")}
    with open(Path(ctx.scenario_dir) / "worker_env.jsonl", "a") as f:
        f.write(json.dumps({"pid": os.getpid(), **env}) + "\\n")
"""
# Four variants of two steps, so two workers each run two (variant, repeat)s.
SCENARIO = """\
version: 1
name: pin
platform: %(platform)s
backend: sim
devices: %(devices)d
sim: {construct_s: 0.05, release_delay_s: 0.01, count: 8}
timeouts: {step: 30, worker_start: 30}
defaults: {model: facebook/opt-125m, gpu_memory_utilization: 0.4}
teardown_profiles:
  spy: {after: [del_llm, cleanup_dist_env, {call: "envspy:record"}, wait_memory]}
variants:
  a: {profile: spy}
  b: {profile: spy}
  c: {profile: spy}
  d: {profile: spy}
steps:
  - name: one
    workload: {prompt_set: short, sampling: [{temperature: 0.0, max_tokens: 4}]}
  - name: two
    workload: {prompt_set: short, sampling: [{temperature: 0.0, max_tokens: 4}]}
"""


# ----------------------------------------------------------------------------- device sets
def test_devices_are_counted_within_the_outer_list():
    devices = pinning.discover({"CUDA_VISIBLE_DEVICES": "2,3, 5,7"}, platform="cuda")
    assert devices.ids == ("2", "3", "5", "7") and devices.variables == ("CUDA_VISIBLE_DEVICES",)
    assert pinning.device_sets(devices, 1, 4) == [("2",), ("3",), ("5",), ("7",)]
    assert pinning.device_sets(devices, 2, 2) == [("2", "3"), ("5", "7")]
    assert pinning.worker_env(devices, ("5", "7")) == {"CUDA_VISIBLE_DEVICES": "5,7", **MULTICAST_OFF}
    # --gpus takes the first N of the outer list, never more than it holds
    assert pinning.discover({"CUDA_VISIBLE_DEVICES": "2,3,5,7"}, gpus=2).ids == ("2", "3")
    with pytest.raises(InputError, match=r"--gpus 5: only 4 devices are visible \(CUDA_VISIBLE_DEVICES=2,3, 5,7\)"):
        pinning.discover({"CUDA_VISIBLE_DEVICES": "2,3, 5,7"}, gpus=5)
    uuids = pinning.discover({"CUDA_VISIBLE_DEVICES": "GPU-aa,GPU-bb"})
    assert pinning.device_sets(uuids, 1, 2) == [("GPU-aa",), ("GPU-bb",)]


def test_rocm_variables():
    # HIP and CUDA spelling the same list are narrowed together (vLLM on ROCm checks they agree)
    both = pinning.discover({"HIP_VISIBLE_DEVICES": "4,6", "CUDA_VISIBLE_DEVICES": "4,6"}, platform="rocm")
    assert pinning.worker_env(both, ("6",)) == {"CUDA_VISIBLE_DEVICES": "6", "HIP_VISIBLE_DEVICES": "6", **MULTICAST_OFF}
    # HIP indexes into ROCR's list: HIP is narrowed, ROCR (the outer level) is left as it is
    nested = pinning.discover({"ROCR_VISIBLE_DEVICES": "0,1,2,3", "HIP_VISIBLE_DEVICES": "1,3"}, platform="rocm")
    assert nested.ids == ("1", "3") and nested.variables == ("HIP_VISIBLE_DEVICES",)
    only_rocr = pinning.discover({"ROCR_VISIBLE_DEVICES": "4,5"}, platform="rocm")
    assert pinning.worker_env(only_rocr, ("5",)) == {"ROCR_VISIBLE_DEVICES": "5", **MULTICAST_OFF}
    # no outer list: a ROCm worker gets HIP and CUDA
    counted = pinning.discover({}, gpus=2, platform="rocm")
    assert pinning.worker_env(counted, ("1",)) == {"HIP_VISIBLE_DEVICES": "1", "CUDA_VISIBLE_DEVICES": "1", **MULTICAST_OFF}


def test_device_count_without_an_outer_list():
    assert pinning.discover({}, gpus=3).source == "--gpus 3"
    assert pinning.discover({}, sim_count=8).ids == tuple("01234567")
    assert pinning.discover({}, platform="cuda", probe=lambda p: (2, "nvml")).source == "nvml (2 devices)"
    with pytest.raises(InputError, match="cannot tell how many GPUs"):
        pinning.discover({}, platform="cuda", probe=lambda p: None)
    with pytest.raises(InputError, match="no devices are visible"):
        pinning.discover({"CUDA_VISIBLE_DEVICES": ","})


def test_more_workers_than_device_sets_are_refused():
    devices = pinning.discover({"CUDA_VISIBLE_DEVICES": "0,1,2"})
    assert pinning.device_sets(devices, 2, 1) == [("0", "1")]  # the odd device out is never shared
    with pytest.raises(InputError, match=r"^2 workers x --gpus-per-worker 2 need 4 devices, but only 3 are "
                                         r"available \(CUDA_VISIBLE_DEVICES=0,1,2\): use -n 1 or fewer$"):
        pinning.device_sets(devices, 2, 2)
    with pytest.raises(InputError, match="use --gpus-per-worker 3 or fewer"):
        pinning.device_sets(devices, 4, 1)
    with pytest.raises(InputError, match="must be at least 1"):
        pinning.device_sets(devices, 0, 1)


def test_a_replacement_worker_gets_the_set_of_the_one_that_went_down():
    pool = pinning.SetPool([("0",), ("1",)])
    assert (pool.take("gw0"), pool.take("gw1")) == (("0",), ("1",))
    with pytest.raises(InputError, match="no free device set for worker gw2"):
        pool.take("gw2")
    pool.give_back("gw0")
    assert pool.take("gw2") == ("0",)


# ----------------------------------------------------------------------------- end to end
@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch) -> pytest.Pytester:
    for var in (*VISIBLE_ENV, "HARNESS_SIM_LEDGER", "PYTEST_XDIST_WORKER", "HARNESS_PLATFORM"):
        monkeypatch.delenv(var, raising=False)
    pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\n")
    write_scenario(pytester.path)
    return pytester


def write_scenario(root: Path, platform: str = "rocm", devices: int = 1) -> None:
    (root / "scenarios").mkdir(exist_ok=True)
    (root / "scenarios" / "pin.yaml").write_text(SCENARIO % {"platform": platform, "devices": devices})
    (root / "scenarios" / "envspy.py").write_text(SPY)


def worker_envs(root: Path) -> list[dict]:
    path = root / "scenarios" / "worker_env.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def by_xdist_worker(records: list[dict], var: str) -> dict[str, set[str]]:
    seen: dict[str, set[str]] = defaultdict(set)
    for r in records:
        seen[r["PYTEST_XDIST_WORKER"]].add(r[var])
    return dict(seen)


def run(project: pytest.Pytester, monkeypatch, env: dict[str, str], *args: str) -> pytest.RunResult:
    for var, value in env.items():  # the outer environment, as CI would set it
        monkeypatch.setenv(var, value)
    return project.runpytest_subprocess("scenarios/pin.yaml", "--harness-out", "results", *args)


def test_each_worker_gets_its_own_device_from_the_outer_list(project, monkeypatch):
    result = run(project, monkeypatch, {"CUDA_VISIBLE_DEVICES": "5,7"}, "-n", "2", "--gpus-per-worker", "1")
    result.assert_outcomes(passed=8)
    records = worker_envs(project.path)
    assert len(records) == 8  # every step's teardown, in the process that built the engine
    seen = by_xdist_worker(records, "CUDA_VISIBLE_DEVICES")
    assert set(seen) == {"gw0", "gw1"}
    assert all(len(devices) == 1 for devices in seen.values())
    assert {d for devices in seen.values() for d in devices} == {"5", "7"}  # distinct, inside the outer list
    result.stdout.fnmatch_lines(["*1 device(s) per worker from CUDA_VISIBLE_DEVICES=5,7*"])


def test_sets_of_two_devices_and_rocm_variables(project, monkeypatch):
    write_scenario(project.path, platform="rocm", devices=2)
    result = run(project, monkeypatch, {"HIP_VISIBLE_DEVICES": "1,2,3,4", "CUDA_VISIBLE_DEVICES": "1,2,3,4"},
                 "-n", "2", "--gpus-per-worker", "2")
    result.assert_outcomes(passed=8)
    records = worker_envs(project.path)
    assert all(r["HIP_VISIBLE_DEVICES"] == r["CUDA_VISIBLE_DEVICES"] for r in records)
    seen = by_xdist_worker(records, "HIP_VISIBLE_DEVICES")
    assert sorted(d for devices in seen.values() for d in devices) == ["1,2", "3,4"]
    assert all(len(devices) == 1 for devices in seen.values())


def test_the_simulated_node_is_shared_out_when_nothing_is_visible(project, monkeypatch):
    result = run(project, monkeypatch, {}, "-n", "2", "--gpus-per-worker", "4")
    result.assert_outcomes(passed=8)
    seen = by_xdist_worker(worker_envs(project.path), "CUDA_VISIBLE_DEVICES")
    assert sorted(d for devices in seen.values() for d in devices) == ["0,1,2,3", "4,5,6,7"]


def test_without_xdist_the_pytest_process_is_the_one_worker(project, monkeypatch):
    result = run(project, monkeypatch, {"CUDA_VISIBLE_DEVICES": "5,7"}, "--gpus-per-worker", "1")
    result.assert_outcomes(passed=8)
    assert {r["CUDA_VISIBLE_DEVICES"] for r in worker_envs(project.path)} == {"5"}


def test_more_workers_than_devices_is_a_usage_error(project, monkeypatch):
    result = run(project, monkeypatch, {"CUDA_VISIBLE_DEVICES": "5,7"}, "-n", "3", "--gpus-per-worker", "1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: 3 workers x --gpus-per-worker 1 need 3 devices, but only 2 are available "
                                 "(CUDA_VISIBLE_DEVICES=5,7): use -n 2 or fewer"])
    assert not (project.path / "results").exists() and worker_envs(project.path) == []  # nothing ran


def test_a_scenario_needing_more_devices_than_a_worker_has_fails_in_one_line(project, monkeypatch):
    write_scenario(project.path, devices=2)
    result = run(project, monkeypatch, {"CUDA_VISIBLE_DEVICES": "5,7"}, "-n", "2", "--gpus-per-worker", "1", "-k", "one")
    result.assert_outcomes(errors=4)
    result.stdout.fnmatch_lines(["*InfrastructureError: *pin.yaml: devices: the scenario needs 2 devices, "
                                 "this worker has 1 (--gpus-per-worker 1)*"])
    assert "Traceback" not in result.stdout.str() and "During handling" not in result.stdout.str()


# ----------------------------------------------------------------------------- a TP=2 scenario, two workers
TP_SPY = """\
import json, os
from pathlib import Path
from harness.device import probes

def record(ctx):  # runs before del_llm: the engine still holds both of its devices
    with open(Path(ctx.scenario_dir) / "tp_seen.jsonl", "a") as f:
        f.write(json.dumps({"physical": probes.physical_ids(ctx.devices),
                            "used": [u for u, _ in ctx.probe.read(ctx.devices)],
                            "nvls": os.environ.get("NCCL_NVLS_ENABLE")}) + "\\n")
"""
TP_SCENARIO = """\
version: 1
name: tp2
platform: cuda
backend: sim
devices: 2
sim: {construct_s: 0.05, release_delay_s: 0.01, count: 8, total_gib: 64, baseline_gib: 1}
timeouts: {step: 30, worker_start: 30}
defaults: {model: facebook/opt-125m, gpu_memory_utilization: 0.4, tensor_parallel_size: 2}
teardown_profiles:
  spy: {after: [{call: "tpspy:record"}, engine_core_shutdown, del_llm, cleanup_dist_env, wait_memory]}
variants:
  a: {profile: spy}
  b: {profile: spy}
steps:
  - name: one
  - name: two
"""


def test_two_workers_each_run_a_tp2_engine_on_their_own_pair(project, monkeypatch):
    (project.path / "scenarios" / "pin.yaml").unlink()
    (project.path / "scenarios" / "tp2.yaml").write_text(TP_SCENARIO)
    (project.path / "scenarios" / "tpspy.py").write_text(TP_SPY)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    monkeypatch.setenv("NCCL_NVLS_ENABLE", "1")  # the outer environment's: no worker may see it
    result = project.runpytest_subprocess("scenarios/tp2.yaml", "--harness-out", "results",
                                          "-n", "2", "--gpus-per-worker", "2")
    result.assert_outcomes(passed=4)
    seen = [json.loads(line) for line in (project.path / "scenarios" / "tp_seen.jsonl").read_text().splitlines()]
    assert len(seen) == 4
    # each worker's probe saw exactly its own pair, and the engine on both devices of it
    assert sorted({tuple(s["physical"]) for s in seen}) == [("4", "5"), ("6", "7")]
    assert all(len(s["used"]) == 2 and min(s["used"]) > 1 << 30 for s in seen)
    (merged,) = [p.parent for p in (project.path / "results").rglob("summary.json")]  # the workers' parts, joined
    xmls = sorted(merged.glob("*.xml"))
    props = [{p.name: p.value for p in case.child(Properties)}
             for x in xmls for suite in JUnitXml.fromfile(str(x)) for case in suite]
    assert len(props) == 4
    for p in props:  # each device's own figure, and their sum
        held = [int(p["mem_after_construct_bytes_dev0"]), int(p["mem_after_construct_bytes_dev1"])]
        assert min(held) > 1 << 30 and sum(held) == int(p["mem_after_construct_bytes"])
        # the wait ends when every device is under (1 - gpu_memory_utilization) x its total
        assert all(int(p[f"mem_after_wait_memory_bytes_dev{d}"]) <= 0.6 * (64 << 30) for d in (0, 1))
    assert {s["nvls"] for s in seen} == {"0"}
