"""harness.results.classify: the log corpus, the phase rules of classify_step, and classify_file's errors."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.results.classify import MAX_SCAN_BYTES, classify_file, classify_step, classify_text, explain_file
from harness.errors import InputError
from harness.model import FailureClass, Phase
from tests.fixtures import DATA, ROOT

F = FailureClass
LOGS = DATA / "logs"
CORPUS = sorted(LOGS.glob("*.log"))


def _expected(path: Path) -> FailureClass:
    return FailureClass(path.name.split("__", 1)[0])


# ---------------------------------------------------------------------------------------------
# The corpus: one scenario per file, the expected class in the name
# ---------------------------------------------------------------------------------------------


def test_corpus_is_large_and_covers_every_class():
    assert len(CORPUS) >= 25
    for path in CORPUS:
        assert path.name.count("__") == 1 and path.name.split("__")[1].endswith(".log"), path.name
        _expected(path)  # a valid class name
    assert {_expected(p) for p in CORPUS} == set(FailureClass)


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_corpus_file(path: Path):
    assert classify_file(path) is _expected(path)


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_corpus_file_explained_by_a_line_of_it(path: Path):
    """The line that decided is a line of the log (its CI and logger prefixes gone): a reader can
    find it, and check the class against it."""
    cls, line = explain_file(path)
    assert cls is _expected(path)
    if cls is F.NONE and line is None:
        return  # no failure and no test summary: nothing to point at
    shown = re.sub(r"\x1b(?:\[[0-9;]*[A-Za-z]|_[^\x07]*\x07)", "", path.read_text(encoding="utf-8"))  # colours
    assert line and line in shown, line


def test_cli_prints_the_class_then_why_and_reads_standard_input(tmp_path):
    log = LOGS / "vram_construction__buildkite_rocm_mi250_samplers_root_above_wrapper.log"
    for argv, stdin in ((["classify", str(log)], None), (["classify", "-"], log.read_bytes())):
        proc = subprocess.run([sys.executable, "run.py", *argv], cwd=ROOT, input=stdin, capture_output=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.decode() == "vram_construction\n"  # the class alone: scripts read it
        assert proc.stderr.decode().startswith("matched: ValueError: Free memory on device cuda:0 (58.33/63.98 GiB)")
    empty = subprocess.run([sys.executable, "run.py", "classify", "-"], cwd=ROOT, input=b"", capture_output=True,
                           timeout=60)
    assert empty.returncode == 2 and empty.stderr.decode().strip() == \
        "error: -: standard input was empty, nothing to classify"


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_corpus_text_with_crlf_line_ends(path: Path):
    text = path.read_text(encoding="utf-8")
    assert classify_text(text) is _expected(path)
    assert classify_text(text.replace("\n", "\r\n")) is _expected(path)


# ---------------------------------------------------------------------------------------------
# classify_text
# ---------------------------------------------------------------------------------------------

STARTUP = ("ValueError: Free memory on device cuda:0 (24.68/255.98 GiB) on startup is less than desired GPU "
           "memory utilization (0.9, 230.39 GiB). Decrease GPU memory utilization or reduce GPU memory used by "
           "other processes.")
WRAPPER = ("RuntimeError: Engine core initialization failed. See root cause above. "
           "Failed core proc(s): {}")
EC = "(EngineCore_DP0 pid=4388) ERROR 11-25 09:12:35 [core.py:708] "

STARTUP_WORDINGS = [
    STARTUP,
    "ValueError: Free memory on device (31.44/47.38 GiB) on startup is less than desired GPU memory utilization "
    "(0.95, 45.01 GiB). Decrease GPU memory utilization or reduce GPU memory used by other processes.",
    "ValueError: Free memory on device cuda:0 (20.12/79.19 GiB) on startup is less than the engine's budget after "
    "excluding external process's weights (58.87 GiB). Increase GPU memory utilization.",
    "ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when "
    "initializing the engine.",
    "ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when "
    "initializing the engine. See https://docs.vllm.ai/en/latest/configuration/conserving_memory/ for more details.",
    "AssertionError: Error in memory profiling. Initial free memory 8113881088, current free memory 8301576192. "
    "This happens when the GPU memory was not properly cleaned up before initializing the vLLM instance.",
    "V1InitializationError: Insufficient GPU memory to load the model.\nRequired: 15.24 GiB\nAvailable: 7.10 GiB",
]


@pytest.mark.parametrize("message", STARTUP_WORDINGS)
def test_startup_check_is_always_vram_construction(message):
    assert classify_text(message) is F.VRAM_CONSTRUCTION
    assert classify_text(f"{EC}{message}\n{WRAPPER}") is F.VRAM_CONSTRUCTION
    assert classify_step(None, "ValueError", message) is F.VRAM_CONSTRUCTION
    assert classify_step(Phase.CONSTRUCT, "ValueError", message) is F.VRAM_CONSTRUCTION


@pytest.mark.parametrize("root_first", [True, False])
def test_root_cause_beats_the_wrapper_in_either_order(root_first):
    root = f"{EC}Traceback (most recent call last):\n{EC}  File \"x.py\", line 1, in request_memory\n{EC}{STARTUP}"
    wrapper = f"E   {WRAPPER}\nFAILED tests/samplers/test_x.py::test_y - {WRAPPER}"
    text = f"{root}\n{wrapper}" if root_first else f"{wrapper}\n----- Captured stderr call -----\n{root}"
    assert classify_text(text) is F.VRAM_CONSTRUCTION


def test_the_wrapper_alone_is_a_construction_error():
    assert classify_text(f"E   {WRAPPER}\n") is F.CONSTRUCTION_ERROR


def test_ansi_colours_and_buildkite_timestamps_are_ignored():
    text = (f"\x1b_bk;t=1764061921000\x07\x1b[31m{EC}{STARTUP}\x1b[0m\n"
            f"\x1b_bk;t=1764061921137\x07[2025-11-25T09:12:36Z] {WRAPPER}\n")
    assert classify_text(text) is F.VRAM_CONSTRUCTION


@pytest.mark.parametrize("warning", [
    "[W1125 09:12:48.120331 ProcessGroupNCCL.cpp:1538] Warning: WARNING: destroy_process_group() was not called "
    "before program exit, which can leak resources. For more info, please see "
    "https://pytorch.org/docs/stable/distributed.html#shutdown (function operator())",
    "[rank0]:[W1125 09:13:02.582041 ProcessGroupNCCL.cpp:1250] Warning: WARNING: process group has NOT been destroyed "
    "before we destruct ProcessGroupNCCL. On normal program exit, the application should call destroy_process_group",
    "/usr/lib/python3.12/multiprocessing/resource_tracker.py:279: UserWarning: resource_tracker: There appear to be "
    "1 leaked semaphore objects to clean up at shutdown\n  warnings.warn('resource_tracker: There appear to be %d '",
    "/vllm/tests/conftest.py:811: UserWarning: The `seed` parameter is deprecated.\n  outputs = self.llm.generate()",
    "WARNING 11-25 09:12:15 [gpu_model_runner.py:3474] CUDA graph capture uses 0.21 GiB. If out-of-memory error "
    "occurs during cudagraph capture, consider decreasing `gpu_memory_utilization` or switching to eager mode.",
    "Exception ignored in: <function LLMEngine.__del__ at 0x7f2b9c1e3e20>\nTraceback (most recent call last):\n"
    "  File \"/vllm/v1/engine/llm_engine.py\", line 372, in __del__\n    self.shutdown()\n"
    "TypeError: 'NoneType' object is not callable",
    "[GPU Memory Monitor] Waiting for GPU 0 to free memory, Condition: Memory usage ratio ≤ 10.0%\n"
    "Done waiting for free GPU memory on devices devices=[0] (threshold='0.10') dur_s=5.02",
    "",
])
def test_passing_output_with_scary_warnings_is_none(warning):
    assert classify_text(warning) is F.NONE
    assert classify_text(f"tests/samplers/test_x.py::test_y PASSED\n{warning}\n"
                         "============ 3 passed, 4 warnings in 12.31s ============\n") is F.NONE


def test_a_passing_session_is_none_whatever_its_output_shows():
    # pytest -s prints what an engine logged for an error a test expected (pytest.raises).
    text = (f"tests/test_x.py::test_expects_oom {EC}torch.OutOfMemoryError: CUDA out of memory.\nPASSED\n"
            "ERROR 11-25 09:12:40 [core_client.py:564] Engine core proc EngineCore_DP0 died unexpectedly\n"
            "================== 5 passed, 1 rerun in 61.02s (0:01:01) ==================\n")
    assert classify_text(text) is F.NONE


def test_quiet_pytest_summaries_count_too():
    oom = "torch.OutOfMemoryError: CUDA out of memory.\n"
    assert classify_text(oom + "12 passed, 2 warnings in 3.10s\n") is F.NONE
    assert classify_text(oom + "1 failed, 11 passed in 3.10s\n") is F.OOM_RUNTIME
    assert classify_text(oom + "4 prompts in 1.20s\n") is F.OOM_RUNTIME  # not a pytest summary


def test_a_crash_wins_even_after_a_passing_summary():
    text = "========== 212 passed in 1903.44s ==========\nFatal Python error: Segmentation fault\n"
    assert classify_text(text) is F.CRASH


def test_a_failed_ci_step_is_not_a_passing_session():
    text = "========== 3 passed in 9.01s ==========\n+++++++++ Timeout +++++++++\nexited with status 1\n"
    assert classify_text(text) is F.TIMEOUT


def test_error_strings_quoted_in_traceback_source_do_not_count():
    # pytest's long traceback prints the whole raising function: both raise statements are quoted,
    # only the second one was raised.
    raised = ("ValueError: To serve at least one request with the models's max seq len (131072), (16.00 GiB KV "
              "cache is needed, which is larger than the available KV cache memory (5.71 GiB). Try increasing "
              "`gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine.")
    text = f"""    def _check_enough_kv_cache_memory(available_memory, get_needed_memory, max_model_len):
        if available_memory <= 0:
            raise ValueError(
                "No available memory for the cache blocks. "
                "Try increasing `gpu_memory_utilization` when initializing the engine. "
            )
        needed_memory = get_needed_memory()
        if needed_memory > available_memory:
>           raise ValueError(
E           {raised}

vllm/v1/core/kv_cache_utils.py:690: ValueError
"""
    assert classify_text(text) is F.CONSTRUCTION_ERROR
    # The same quoted source inside an engine's logged traceback.
    logged = "\n".join(EC + line for line in text.replace(">           ", "            ").splitlines())
    assert classify_text(logged.replace(EC + "E           ", EC)) is F.CONSTRUCTION_ERROR


@pytest.mark.parametrize(("available", "expected"), [
    ("5.71", F.CONSTRUCTION_ERROR), ("0.00", F.VRAM_CONSTRUCTION), ("0.01", F.VRAM_CONSTRUCTION),
])
def test_kv_cache_sizing_is_vram_only_when_no_budget_is_left(available, expected):
    message = ("To serve at least one request with the models's max seq len (2048), (0.07 GiB KV cache is needed, "
               f"which is larger than the available KV cache memory ({available} GiB). Try increasing "
               "`gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine.")
    assert classify_text(f"ValueError: {message}") is expected
    assert classify_step(Phase.CONSTRUCT, "ValueError", message) is expected


def test_device_side_assertions_hint_in_a_cuda_error_is_not_a_device_fault():
    text = ("RuntimeError: HIP error: out of memory\nHIP kernel errors might be asynchronously reported at some "
            "other API call, so the stacktrace below might be incorrect.\n"
            "Compile with `TORCH_USE_HIP_DSA` to enable device-side assertions.\n")
    assert classify_text(text) is F.OOM_RUNTIME


def test_oom_is_placed_by_the_frames_around_it():
    frames = '  File "/vllm/v1/worker/gpu_model_runner.py", line 3322, in {}\n    x = f()\n'
    oom = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB.\n"
    assert classify_text("Traceback (most recent call last):\n" + frames.format("profile_run") + oom) \
        is F.VRAM_CONSTRUCTION
    assert classify_text("Traceback (most recent call last):\n" + frames.format("execute_model") + oom) \
        is F.OOM_RUNTIME
    assert classify_text(oom) is F.OOM_RUNTIME  # nothing says the engine was being built


def test_unrecognised_failures_are_placed_by_context():
    assert classify_text("Traceback (most recent call last):\n  File \"/x.py\", line 3, in test_it\n"
                         "KeyError: 'logprobs'\n") is F.ASSERTION
    assert classify_text("vllm/entrypoints/llm.py:289: in __init__\n    self.llm_engine = x()\n"
                         "E   OSError: facebook/opt-126m is not a local folder\n") is F.CONSTRUCTION_ERROR
    assert classify_text("_____ ERROR at teardown of test_a _____\nE   zmq.error.ZMQError: Socket closed\n") \
        is F.TEARDOWN_ERROR


def test_only_the_end_of_a_huge_text_is_read_and_quickly():
    noise = "INFO 11-25 09:12:01 [core.py:123] Processed prompts: 100% 4/4 [00:00<00:00]\n"
    head = f"{EC}{STARTUP}\n"
    filler = noise * (3 * MAX_SCAN_BYTES // len(noise))
    start = time.perf_counter()
    assert classify_text(head + filler) is F.NONE  # the error lies before the last MAX_SCAN_BYTES
    assert classify_text(filler + head) is F.VRAM_CONSTRUCTION
    assert time.perf_counter() - start < 5.0


# ---------------------------------------------------------------------------------------------
# classify_step: the phase rules
# ---------------------------------------------------------------------------------------------

OOM_WORDINGS = [
    ("OutOfMemoryError", "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB "
                         "of which 1.23 GiB is free."),
    ("OutOfMemoryError", "torch.OutOfMemoryError: HIP out of memory. Tried to allocate 1.00 GiB."),
    ("OutOfDeviceMemory", "HIP out of memory. Tried to allocate 1.00 GiB. GPU 1 has a total capacity of 64.00 GiB "
                          "of which 0.50 GiB is free."),
    ("RuntimeError", "CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported at some other "
                     "API call, so the stacktrace below might be incorrect."),
    ("RuntimeError", "HIP error: hipErrorOutOfMemory"),
    ("RuntimeError", "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
]


@pytest.mark.parametrize(("error_type", "message"), OOM_WORDINGS)
@pytest.mark.parametrize(("phase", "expected"), [
    (Phase.SETTLE, F.VRAM_CONSTRUCTION), (Phase.CONSTRUCT, F.VRAM_CONSTRUCTION),
    (Phase.WORKLOAD, F.OOM_RUNTIME), (Phase.TEARDOWN, F.TEARDOWN_ERROR), (Phase.EXPECT, F.ASSERTION),
])
def test_out_of_memory_by_phase(error_type, message, phase, expected):
    assert classify_step(phase, error_type, message) is expected


def test_construct_wrapper_with_the_root_cause_in_the_log_tail():
    tail = f"{EC}EngineCore failed to start.\n{EC}{STARTUP}\n"
    assert classify_step(Phase.CONSTRUCT, "RuntimeError", WRAPPER.split(": ", 1)[1], log_tail=tail) \
        is F.VRAM_CONSTRUCTION
    tail = f"{EC}torch.OutOfMemoryError: HIP out of memory. Tried to allocate 4.00 GiB.\n"
    assert classify_step(Phase.CONSTRUCT, "RuntimeError", WRAPPER, log_tail=tail) is F.VRAM_CONSTRUCTION


@pytest.mark.parametrize(("phase", "error_type", "message", "expected"), [
    (Phase.CONSTRUCT, "RuntimeError", WRAPPER, F.CONSTRUCTION_ERROR),
    (Phase.CONSTRUCT, "OSError", "facebook/opt-126m is not a local folder and is not a valid model identifier",
     F.CONSTRUCTION_ERROR),
    (Phase.CONSTRUCT, "AssertionError", "assert self.kv_cache_config is not None", F.CONSTRUCTION_ERROR),
    (Phase.SETTLE, "RuntimeError", "lazy-release helper failed to take the memory", F.CONSTRUCTION_ERROR),
    (Phase.SETTLE, "MemoryNotFreed", "Memory of devices [0] not free after 120 seconds (used: 57.31 GiB)",
     F.VRAM_CONSTRUCTION),
    (Phase.WORKLOAD, "ValueError", "The decoder prompt (length 5000) is longer than the maximum model length",
     F.ASSERTION),
    (Phase.WORKLOAD, "AssertionError", "assert len(outputs) == 4", F.ASSERTION),
    (Phase.EXPECT, "ExpectationFailed", "identical_runs: prompt 2: completion 0 differs between runs", F.ASSERTION),
    (Phase.EXPECT, "KeyError", "'logprobs'", F.ASSERTION),
    (None, "ExpectationFailed", "logprobs: prompt 0, token 5: 3 logprobs, expected 5", F.ASSERTION),
    (Phase.TEARDOWN, "MemoryNotFreed", "Memory of devices [0] not free after 120 seconds (used: 57.31 GiB)",
     F.TEARDOWN_ERROR),
    (Phase.TEARDOWN, "ValueError", "Memory of devices [0] not free after 120 seconds", F.TEARDOWN_ERROR),
    (Phase.TEARDOWN, "ValueError", "Memory of devices devices=[0] not free after dur_s=120.03 (threshold='0.10')",
     F.TEARDOWN_ERROR),
    (Phase.TEARDOWN, "AttributeError", "'NoneType' object has no attribute 'shutdown'", F.TEARDOWN_ERROR),
    (Phase.TEARDOWN, "AssertionError", "assert used <= threshold", F.TEARDOWN_ERROR),
    (None, "ValueError", "Memory of devices [0] not free after 120 seconds", F.TEARDOWN_ERROR),
])
def test_phase_rules(phase, error_type, message, expected):
    assert classify_step(phase, error_type, message) is expected


def test_phase_may_be_given_by_value():
    assert classify_step("construct", "ValueError", STARTUP) is F.VRAM_CONSTRUCTION
    assert classify_step("teardown", "ValueError", "Memory of devices [0] not free after 120 seconds") \
        is F.TEARDOWN_ERROR


DEVICE_FAULTS = [
    "Fatal Python error: Segmentation fault",
    "*** SIGSEGV (@0x0) received by PID 4410 (TID 0x7f20b2e1d740) from PID 0; stack trace: ***",
    "Segmentation fault (core dumped)",
    "Aborted (core dumped)",
    "Killed",
    "/bin/bash: line 1:  4121 Killed                  pytest -v -s samplers",
    "RuntimeError: CUDA error: an illegal memory access was encountered",
    "torch.AcceleratorError: CUDA error: device-side assert triggered",
    "Memory access fault by GPU node-2 (Agent handle: 0x5a0c4e2f2c40) on address 0x7ef9a5400000. "
    "Reason: Page not present or supervisor privilege.",
    "RuntimeError: HIP error: hipErrorIllegalAddress",
    "NVRM: Xid (PCI:0000:3b:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus.",
    "AssertionError: function test_tp2 failed when called with args () and kwargs {} (exit code: -11)",
]


@pytest.mark.parametrize("fault", DEVICE_FAULTS)
@pytest.mark.parametrize("phase", [None, *Phase])
def test_a_dead_process_or_device_fault_anywhere_is_a_crash(fault, phase):
    assert classify_step(phase, "RuntimeError", WRAPPER, log_tail=f"{STARTUP}\n{fault}\n") is F.CRASH
    assert classify_text(f"{fault}\n") is F.CRASH


@pytest.mark.parametrize("phase", [None, *Phase])
def test_pytest_timeout_is_a_timeout(phase):
    assert classify_step(phase, "Failed", "Timeout >900.0s") is F.TIMEOUT
    assert classify_step(phase, "Failed", "Timeout (>900.0s) from pytest-timeout.") is F.TIMEOUT
    tail = "+++++++++++++++++++++ Timeout +++++++++++++++++++++\n~~~~~ Stack of MainThread (1403) ~~~~~\n"
    assert classify_step(phase, "RuntimeError", "interrupted", log_tail=tail) is F.TIMEOUT


def test_a_dead_engine_is_a_crash_unless_an_oom_killed_it():
    dead = "EngineCore encountered an issue. See stack trace (above) for the root cause."
    assert classify_step(Phase.WORKLOAD, "EngineDeadError", dead) is F.CRASH
    assert classify_step(Phase.TEARDOWN, "EngineDeadError", dead) is F.CRASH
    tail = f"{EC}EngineCore encountered a fatal error.\n{EC}torch.OutOfMemoryError: CUDA out of memory.\n"
    assert classify_step(Phase.WORKLOAD, "EngineDeadError", dead, log_tail=tail) is F.OOM_RUNTIME


def test_engine_death_messages_in_the_log_tail_alone_do_not_make_a_crash():
    # vLLM logs "died unexpectedly" at some clean shutdowns; the step's own exception decides.
    tail = "ERROR 11-30 12:04:05 [core_client.py:564] Engine core proc EngineCore_DP0 died unexpectedly\n"
    assert classify_step(Phase.TEARDOWN, "MemoryNotFreed", "Memory of devices [0] not free after 120 seconds",
                         log_tail=tail) is F.TEARDOWN_ERROR
    assert classify_step(Phase.EXPECT, "ExpectationFailed", "distinct: prompt 1", log_tail=tail) is F.ASSERTION


@pytest.mark.parametrize("phase", [None, *Phase])
def test_classify_step_never_says_none(phase):
    assert classify_step(phase, "", "") is not F.NONE
    assert classify_step(phase, "RuntimeError", "something odd") is not F.NONE


# ---------------------------------------------------------------------------------------------
# classify_file
# ---------------------------------------------------------------------------------------------


def test_classify_file_missing(tmp_path: Path):
    path = tmp_path / "nope.log"
    with pytest.raises(InputError) as info:
        classify_file(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_classify_file_directory(tmp_path: Path):
    with pytest.raises(InputError) as info:
        classify_file(tmp_path)
    assert str(tmp_path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any file")
def test_classify_file_unreadable(tmp_path: Path):
    path = tmp_path / "secret.log"
    path.write_text(STARTUP)
    path.chmod(0)
    try:
        with pytest.raises(InputError) as info:
            classify_file(path)
    finally:
        path.chmod(0o600)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_classify_file_read_error(tmp_path: Path, monkeypatch):
    from harness import boundedread

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    path = tmp_path / "x.log"
    path.write_text(STARTUP)
    monkeypatch.setattr(boundedread.os, "open", refuse)  # the one place classify opens a file
    with pytest.raises(InputError, match="Permission denied") as info:
        classify_file(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_classify_file_accepts_str_and_undecodable_bytes(tmp_path: Path):
    path = tmp_path / "mixed.log"
    path.write_bytes(b"\xff\xfe garbage \x80\n" + STARTUP.encode() + b"\n\xc3")
    assert classify_file(str(path)) is F.VRAM_CONSTRUCTION


def test_classify_file_reads_only_the_end(tmp_path: Path):
    path = tmp_path / "huge.log"
    line = b"INFO 11-25 09:12:01 [core.py:123] Processed prompts: 100% 4/4\n"
    with path.open("wb") as f:
        f.write(STARTUP.encode() + b"\n")
        f.write(line * (MAX_SCAN_BYTES // len(line) + 10))
    assert classify_file(path) is F.NONE
    with path.open("ab") as f:
        f.write(b"Segmentation fault (core dumped)\n")
    assert classify_file(path) is F.CRASH
