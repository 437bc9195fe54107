"""Several devices per worker (tensor parallel): each device's memory after every action lands in
the JUnit case properties, and what the step's log says while ranks exit is recorded as a fact."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from harness.model import MemorySample, Outcome, StepResult
from harness.results import events, junit
from harness.device import probes

NOT_DESTROYED = ("[rank1]:[W1202 ProcessGroupNCCL.cpp:1479] Warning: WARNING: destroy_process_group() was not "
                 "called before program exit, which can leak resources.\n")
SIGTERM = "WARNING [multiproc_executor.py:491] [shutdown] Executor: workers still running after grace period; " \
          "sending SIGTERM count=2\n"


class Log:
    """A worker's log and events, written as the worker writes them (offsets into the log)."""

    def __init__(self, path):
        self.path, self.events = path, []
        path.write_text("")

    def write(self, text: str) -> None:
        with open(self.path, "a") as f:
            f.write(text)

    def emit(self, event: str, index: int, **fields) -> None:
        self.events.append({"t": time.time(), "event": event, "step": f"s{index}", "index": index, **fields})

    def step(self, index: int, per_device: list[int], during: str = "", after: str = "") -> None:
        self.emit("step_start", index, timeout_s=10, log_offset=self.path.stat().st_size)
        for label in ("after_construct", "after_del_llm"):
            self.emit("memory", index, label=label, used_bytes=sum(per_device), total_bytes=2 << 40,
                      per_device=per_device if label == "after_construct" else [0] * len(per_device))
        self.write(during)
        self.emit("step_end", index, outcome="passed", log_offset=self.path.stat().st_size)
        self.write(after)  # a rank process that exits after the step ended


def collect(log: Log, n: int):
    plan_steps = [{"name": f"s{i}", "index": i, "timeout_s": 10} for i in range(n)]
    return events.collect(log.events, plan_steps, log=log.path, stopped=None, exit_description="exit 0")[1]


def test_each_devices_memory_is_a_case_property(tmp_path):
    log = Log(tmp_path / "w.log")
    log.step(0, [7 << 30, 5 << 30])
    props = junit.case_properties(collect(log, 1)[0])
    assert props["mem_after_construct_bytes"] == str(12 << 30)
    assert (props["mem_after_construct_bytes_dev0"], props["mem_after_construct_bytes_dev1"]) == \
        (str(7 << 30), str(5 << 30))
    assert props["mem_after_del_llm_bytes_dev0"] == props["mem_after_del_llm_bytes_dev1"] == "0"


def test_one_device_adds_no_per_device_properties(tmp_path):
    log = Log(tmp_path / "w.log")
    log.step(0, [3 << 30])
    props = junit.case_properties(collect(log, 1)[0])
    assert props["mem_after_construct_bytes"] == str(3 << 30) and not any("_dev" in k for k in props)


def test_log_facts_count_in_each_steps_part_of_the_log(tmp_path):
    log = Log(tmp_path / "w.log")
    log.step(0, [1, 1], during=SIGTERM, after=NOT_DESTROYED * 2)  # printed while the ranks exit, late
    log.step(1, [1, 1], during="INFO nothing to see\n")
    log.step(2, [1, 1], after=NOT_DESTROYED)  # the last step's part runs to the end of the log
    results = collect(log, 3)
    assert [r.log_facts for r in results] == [
        {"destroy_process_group_not_called": 2, "workers_sigterm": 1},
        {"destroy_process_group_not_called": 0, "workers_sigterm": 0},
        {"destroy_process_group_not_called": 1, "workers_sigterm": 0}]
    assert all(r.outcome is Outcome.PASSED for r in results), "a fact, not a failure"
    props = junit.case_properties(results[0])
    assert props["log_destroy_process_group_not_called"] == "2" and props["log_workers_sigterm"] == "1"


def test_a_step_that_never_ran_has_no_facts(tmp_path):
    log = Log(tmp_path / "w.log")
    log.step(0, [1, 1], after=NOT_DESTROYED)
    results = collect(log, 2)
    assert results[0].log_facts["destroy_process_group_not_called"] == 1
    assert results[1].outcome is Outcome.SKIPPED and results[1].log_facts == {}


def test_memory_samples_with_per_device_figures_load_back():
    sample = MemorySample("after_construct", 1.0, 3, 4, [1, 2])
    res = StepResult("s", 0, Outcome.PASSED, memory=[sample], log_facts={"workers_sigterm": 1})
    assert StepResult.from_dict(json.loads(json.dumps(res.to_dict()))) == res


# ----------------------------------------------------------------------------- the host probe's ranks
TITLED = """
import sys, time, setproctitle
setproctitle.setproctitle(sys.argv[1])
block = bytearray(int(sys.argv[2]) << 20)  # resident: every page written
for i in range(0, len(block), 4096):
    block[i] = 1
print("ready", flush=True)
time.sleep(60)
"""


def test_host_probe_reports_each_tensor_parallel_ranks_own_process(tmp_path):
    pytest.importorskip("setproctitle")  # what vLLM titles its rank processes with
    ranks = []
    try:
        for title, mib in (("VLLM::Worker_TP0", 64), ("VLLM::Worker_TP1", 192)):
            proc = subprocess.Popen([sys.executable, "-c", TITLED, title, str(mib)], stdout=subprocess.PIPE, text=True)
            ranks.append(proc)
            assert proc.stdout.readline().strip() == "ready"
        probe = probes.HostProbe()
        (rank0, total), (rank1, _) = probe.read([0, 1])
        assert 64 << 20 <= rank0 < 128 << 20 and 192 << 20 <= rank1 < 256 << 20
        assert total == probe._psutil.virtual_memory().total
        assert probe.read([0, 1, 2])[2][0] == 0, "a rank with no process holds nothing"
        ranks[1].kill()
        ranks[1].wait()
        assert probe.read([0, 1])[1][0] == 0, "a rank whose process exited holds nothing"
        # one device: the whole process tree, this process included, as before
        (whole, _), = probe.read([0])
        assert whole >= rank0 + probe._me.memory_info().rss
    finally:
        for proc in ranks:
            proc.kill()
            proc.wait()
