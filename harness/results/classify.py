"""One `FailureClass` for a log, a traceback or a failed step (docs/architecture.md, contracts).

Three entry points:

- `classify_text(text)`: any log or traceback text (a CI log, pytest output, a JUnit failure);
- `classify_step(phase, error_type, message, traceback, log_tail)`: a step the worker reported as
  failed, where the phase is known;
- `classify_file(path)`: `classify_text` of a file's last `MAX_SCAN_BYTES`.

How a text is read
------------------
1. It is normalised (`_normalize`): colour and Buildkite escapes go; so do per-line prefixes
   (timestamps, ``(EngineCore_DP0 pid=N)`` / ``(VllmWorker rank=0 pid=N)`` tags, vLLM's
   ``ERROR 11-25 09:12:01 [core.py:123]`` header, ``[rank0]:``, pytest's ``E   ``); source lines
   quoted by tracebacks are blanked, because a quoted ``raise ValueError("No available memory ...")``
   is not that error; ``Exception ignored in ...`` blocks go, because Python ignored them.
2. `_RULES` is searched in order and the first kind found decides. A few kinds depend on where the
   failure happened: the step's phase when the caller knows it, otherwise the nearest traceback
   frame or vLLM message around the match (`_context`).
3. Nothing found: a text that shows no failure at all is `none`; a failure nobody recognises is
   placed by its context, and is an `assertion` (the test itself failed) when nothing says more.

A pytest session whose summary reports no failed test and no error is `none` whatever warnings,
spurious shutdown messages or handled errors its output shows, unless the process or the device
faulted: a segfault or a GPU fault is never benign.

Only the standard library and harness.model / harness.errors are imported: the worker side uses
this module in interpreters that have nothing else.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import BinaryIO

from harness import boundedread
from harness.errors import InputError
from harness.model import FailureClass, Phase

__all__ = ["MAX_SCAN_BYTES", "classify_file", "classify_step", "classify_text", "explain_file", "explain_stream",
           "explain_text"]

#: Only the end of a longer text is read: the failure that ended a run is at its end.
MAX_SCAN_BYTES = 2 * 1024 * 1024

_F = FailureClass
_BUILDING = (Phase.CONSTRUCT, Phase.SETTLE)


# ---------------------------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------------------------

# CSI (colours, cursor), OSC, Buildkite's APC timestamps (ESC _bk;t=...BEL), two-byte escapes.
_ESCAPES = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|_[^\x07\n]*\x07?|[@-Z\\^_])")

# Prefixes that CI systems, vLLM's process tags, vLLM's logger and pytest put in front of a line,
# in any combination; one separating blank is eaten after each, so indentation survives.
_PREFIX = re.compile(
    r"^(?:(?:"
    r"\[\d{4}-\d\d-\d\d[T ][\d:.,]+Z?\]"  # [2025-11-25T09:12:01Z] (Buildkite with timestamps)
    r"|\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?Z?"  # 2025-11-25T09:12:01.1234567Z (GitHub)
    r"|\([^()\n]{0,60}?\bpid=\d+[^()\n]{0,60}\)"  # (EngineCore_DP0 pid=12), (VllmWorker rank=0 pid=3)
    r"|\[rank\d+\]:"  # torchrun
    r"|\[Stage-\d+\]"
    r"|(?:DEBUG|INFO|WARNING|ERROR|CRITICAL) \d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? (?:\[[^\]\n]*\]|\S+:\d+\])"
    r")[ \t]?|E(?:[ \t]+|$))+",  # pytest's error lines: "E       ValueError: ..."
    re.M,
)

# Source lines quoted by tracebacks (pytest's and Python's): indented code, pytest's ">" line.
# `def` lines stay: in pytest's long format they are the only sign of the function a frame is in.
# Exception-group lines ("    | ValueError: ...") are not code and stay too.
_CODE_LINE = re.compile(r"^(?:>|[ \t]{4,}(?![ \t]|(?:async[ \t]+)?def[ \t]|\|))[^\n]*$", re.M)

# Python prints these at exit (often from __del__) and carries on: not a failure of anything.
_IGNORED = re.compile(
    r"^Exception ignored (?:in|while)\b[^\n]*\n"
    r"(?:Traceback \(most recent call last\):\n(?:(?:[ \t][^\n]*)?\n)*)?"
    r"[A-Za-z_][\w.]*(?:Error|Exception|Warning|Exit)\b[^\n]*$",
    re.M,
)


def _normalize(text: str) -> str:
    if "\x1b" in text:
        text = _ESCAPES.sub("", text)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _PREFIX.sub("", text)
    text = _CODE_LINE.sub("", text)
    return "\n" + _IGNORED.sub("", text)


# ---------------------------------------------------------------------------------------------
# What a failure looks like
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rule:
    kind: str
    cls: FailureClass  # the class when neither the phase nor the context changes it (`_resolve`)
    patterns: tuple[re.Pattern[str], ...]

    def search(self, text: str) -> re.Match[str] | None:
        """The earliest match of any of the rule's patterns."""
        best = None
        for pattern in self.patterns:
            m = pattern.search(text)
            if m is not None and (best is None or m.start() < best.start()):
                best = m
        return best


def _rule(kind: str, cls: FailureClass, *patterns: str) -> _Rule:
    # One regex per pattern, each starting with literal text, rather than one alternation: the
    # regex engine then skips ahead to candidate positions, which makes a 2 MB log ~20x faster.
    # `_normalize` starts the text with a newline, so a leading "\n" stands for "at a line start".
    return _Rule(kind, cls, tuple(re.compile(p, re.M) for p in patterns))


# Order = priority, wherever each match sits in the text: a dead process or device first (what
# follows it is a consequence), then root causes, then the wrappers that report them
# (EngineDeadError, "Engine core initialization failed": pytest prints those above the captured root
# cause, `pytest -s` below it). Assertions beat engine-death messages, which vLLM also prints,
# spuriously, at clean shutdowns.
_RULES: tuple[_Rule, ...] = (
    _rule("crash", _F.CRASH,
          # signals and aborts of the test process or of an engine process
          r"Segmentation fault", r"SIGSEGV", r"SIGBUS", r"core dumped", r"\nFatal Python error:",
          r"\nterminate called after throwing an instance of",
          r"\nKilled[ \t]*$", r"line \d+: +\d+ Killed\b", r"Killed process \d+",  # shell; kernel OOM killer
          r"exit(?: ?code| status|ed with (?:status|code))[:=]? ?\(?(?:-(?:4|6|7|8|9|11)|13[4-79])\b",  # signals
          r"node down: Not properly terminated", r"replacing crashed worker",  # pytest-xdist
          # device faults, CUDA and ROCm
          r"an illegal memory access was encountered", r"ErrorIllegalAddress",  # cuda..., hip...
          r"device-side assert triggered", r"unspecified launch failure", r"ErrorLaunchFailure",
          r"Memory access fault by GPU", r"HW Exception by GPU", r"HSA_STATUS_ERROR_MEMORY_APERTURE_VIOLATION",
          r"GPU has fallen off the bus", r"uncorrectable ECC error", r"NVRM: Xid", r"Xid ?(?:\(PCI:|: ?\d+|\d+\b)"),
    _rule("timeout", _F.TIMEOUT,
          r"Failed: Timeout \(?>", r"\n\+{4,} Timeout \+{4,}[ \t]*$", r"from pytest-timeout",  # pytest-timeout
          r"\nTimeout: step exceeded"),  # the harness's own per-step deadline
    _rule("live_engine", _F.TEARDOWN_ERROR,  # a wait that could never end, wherever it ran
          r"LiveEngineHolds", r"held by a live engine built by"),
    _rule("startup_check", _F.VRAM_CONSTRUCTION,  # vLLM refuses to start: every version's wording
          r"Free memory on device\b[^\n]*?\bon startup is less than",
          r"less than desired GPU memory utilization",
          r"No available memory for the cache blocks",
          r"not properly cleaned up before initializing the vLLM instance",  # V0 "Error in memory profiling"
          r"Insufficient (?:GPU |device )?memory to (?:load|initiali[sz]e|start)\b"),
    _rule("out_of_memory", _F.OOM_RUNTIME,  # vram_construction while the engine is being built
          r"CUDA out of memory", r"HIP out of memory", r"CUDA error: out of memory", r"HIP error: out of memory",
          r"OutOfMemoryError", r"hipErrorOutOfMemory", r"cudaErrorMemoryAllocation", r"CUDA_ERROR_OUT_OF_MEMORY",
          r"BLAS_STATUS_ALLOC_FAILED", r"Cuda failure '?out of memory"),  # cuBLAS/hipBLAS/rocBLAS; NCCL
    _rule("kv_cache_too_small", _F.CONSTRUCTION_ERROR,  # vram_construction when no KV budget is left
          r"To serve at least one request with the models?'s max seq len",
          r"is larger than the maximum number of tokens that can be stored in KV cache",
          r"Insufficient memory for KV cache to serve requests"),
    _rule("memory_not_freed", _F.TEARDOWN_ERROR,  # vram_construction when waited for before building
          r"Memory of devices\b[^\n]*\bnot free after\b", r"MemoryNotFreed"),
    _rule("assertion", _F.ASSERTION,
          r"AssertionError", r"ExpectationFailed", r"\nassert\b", r"\nFAILED \S+ - assert\b",
          r"Failed: (?!Timeout\b)"),  # pytest.fail()
    _rule("engine_died", _F.CRASH,
          r"EngineDeadError", r"died unexpectedly", r"WorkerDied", r"EngineCore encountered a fatal error"),
    _rule("teardown_failed", _F.TEARDOWN_ERROR,  # pytest's own word for it
          r"ERROR at teardown of", r"failed on teardown with"),
    _rule("construction_failed", _F.CONSTRUCTION_ERROR,
          r"Engine core initialization failed", r"EngineCore failed to start", r"Failed core proc\(s\)",
          r"WorkerProc (?:initialization )?failed", r"ERROR at setup of", r"failed on setup with"),
)
_CRASH_RULE = _RULES[0]

# Any failure at all, for texts where no rule matched.
_NONZERO_EXIT = re.compile(r"exit(?:ed with)? (?:status|code):? (?!0\b)-?\d+")  # Buildkite, GitHub Actions
_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception)\b(?:\([\w.]+\))?(?::|$)",
                             re.M)
_FAILURE = _rule("failure", _F.ASSERTION,  # its class is unused: `_unrecognised` places it
                 r"\nTraceback \(most recent call last\):", r"\n(?:FAILED|ERROR) \S+::",
                 r"::\S* (?:FAILED|ERROR)\b", r"\] (?:FAILED|ERROR) \S+::",  # pytest -v, pytest-xdist
                 r"\n=+ (?:FAILURES|ERRORS) =+$", r"failed on (?:setup|teardown|call) with",
                 _NONZERO_EXIT.pattern)

# pytest's last line, "==== 1 failed, 5 passed, 2 warnings in 301.22s (0:05:01) ====" (no "=" with -q).
_SUMMARY = re.compile(r"\n=*[ \t]*((?:\d+ (?:passed|failed|errors?|skipped|xfailed|xpassed|warnings?|deselected"
                      r"|reruns?|subtests? \w+)(?:, )?)+ in [\d.]+s\b[^=\n]*?)[ \t]*=*[ \t]*$", re.M)
_SUMMARY_FAILED = re.compile(r"\b\d+ (?:failed|errors?)\b")

# ---------------------------------------------------------------------------------------------
# Where in a step a failure happened, from the text around it
# ---------------------------------------------------------------------------------------------

# A frame line: Python's (faulthandler's has no comma), pytest's short form, pytest's long form.
_FRAME = r"(?:, line \d+,? in |:\d+: in |^[ \t]*(?:async[ \t]+)?def )"
_CONSTRUCT_FUNCS = (
    "__init__|from_engine_args|from_vllm_config|_init_executor|init_device|load_model|request_memory"
    "|initialize_from_config|initialize_cache|_initialize_kv_caches|determine_available_memory"
    "|determine_num_available_blocks|profile_run|_dummy_run|_dummy_sampler_run|capture_model"
    "|compile_or_warm_up_model|make_client|wait_for_engine_startup|wait_for_ready|construct")
_WORKLOAD_FUNCS = (
    "generate|_run_engine|chat|encode|embed|score|beam_search|run_busy_loop|_process_engine_step|step"
    "|step_with_batch_queue|execute_model|sample_tokens|get_output|add_request|_add_request")
_TEARDOWN_FUNCS = (
    "__exit__|__del__|shutdown|cleanup_dist_env_and_memory|destroy_model_parallel"
    "|destroy_distributed_environment|_?teardown\\w*")
_CUES = re.compile(
    rf"(?P<construct>{_FRAME}(?:{_CONSTRUCT_FUNCS})\b|Engine core initialization failed"
    r"|EngineCore failed to start|WorkerProc (?:initialization )?failed|ERROR at setup of"
    r"|failed on setup with|when warming up sampler)"
    rf"|(?P<workload>{_FRAME}(?:{_WORKLOAD_FUNCS})\b|EngineCore encountered a fatal error|EngineDeadError)"
    rf"|(?P<teardown>{_FRAME}(?:{_TEARDOWN_FUNCS})\b|ERROR at teardown of|failed on teardown with)",
    re.M,
)
_CUE_PHASES = {"construct": Phase.CONSTRUCT, "workload": Phase.WORKLOAD, "teardown": Phase.TEARDOWN}
_BEFORE, _AFTER = 12_000, 6_000  # frames sit above an exception line; wrappers below it in -s logs


def _context(text: str, pos: int) -> Phase | None:
    """The phase named by the cue nearest to ``pos``: a traceback frame or a vLLM message."""
    start = max(0, pos - _BEFORE)
    best, best_distance = None, None
    for m in _CUES.finditer(text, start, min(len(text), pos + _AFTER)):
        distance = abs(m.start() - pos)
        if best_distance is None or distance < best_distance:
            best, best_distance = _CUE_PHASES[m.lastgroup], distance
    return best


# vLLM sizes the KV cache from the engine's own budget (gpu_memory_utilization x total, minus its
# own weights and activations, measured from the start-up snapshot), so memory another engine
# still holds shows up in the start-up check, not here: a positive budget that is too small for
# max_model_len is a configuration error. Only a budget that is gone (~0, the wording vLLM itself
# uses "No available memory for the cache blocks" for) is the VRAM failure.
_KV_LEFT = re.compile(
    r"available KV cache memory \((-?[\d.]+) GiB\)|Available KV cache memory: (-?[\d.]+) GiB"
    r"|stored in KV cache \((-?\d+)\)")


def _kv_budget_gone(text: str, pos: int) -> bool:
    m = _KV_LEFT.search(text, pos, pos + 2000)
    if m is None:
        return False
    gib, gib2, tokens = m.groups()
    if tokens is not None:
        return int(tokens) <= 0
    return float(gib if gib is not None else gib2) <= 0.01


def _resolve(rule: _Rule, m: re.Match[str], text: str, phase: Phase | None) -> FailureClass:
    """The class of a rule's match, given the step's phase (None: read it from the text)."""
    kind = rule.kind
    if kind in ("crash", "timeout", "live_engine"):
        return rule.cls
    if phase is Phase.TEARDOWN:
        return _F.CRASH if kind == "engine_died" else _F.TEARDOWN_ERROR
    if phase is Phase.EXPECT:
        return _F.CRASH if kind == "engine_died" else _F.ASSERTION
    where = phase or _context(text, m.start())
    if kind == "out_of_memory":
        return (_F.VRAM_CONSTRUCTION if where in _BUILDING
                else _F.TEARDOWN_ERROR if where is Phase.TEARDOWN else _F.OOM_RUNTIME)
    if kind == "kv_cache_too_small":
        return _F.VRAM_CONSTRUCTION if _kv_budget_gone(text, m.start()) else _F.CONSTRUCTION_ERROR
    if kind == "memory_not_freed":  # the settle wait before a construction: that engine cannot start
        return _F.VRAM_CONSTRUCTION if where in _BUILDING else _F.TEARDOWN_ERROR
    if kind == "assertion":  # an `assert` inside vLLM's engine start or the teardown code
        return (_F.CONSTRUCTION_ERROR if where in _BUILDING
                else _F.TEARDOWN_ERROR if where is Phase.TEARDOWN else _F.ASSERTION)
    return rule.cls


def _decide(text: str, phase: Phase | None, own: str | None = None,
            rules: tuple[_Rule, ...] = _RULES) -> FailureClass | None:
    """The first rule that matches decides. ``own`` (the step's own exception, without the log
    tail) is where engine-death messages count: a log tail shows them after clean shutdowns too."""
    found = _decide_at(text, phase, own, rules)
    return found[0] if found else None


def _decide_at(text: str, phase: Phase | None, own: str | None = None,
               rules: tuple[_Rule, ...] = _RULES) -> tuple[FailureClass, str] | None:
    """`_decide`, with the line of the text that decided."""
    for rule in rules:
        where = own if rule.kind == "engine_died" and own is not None else text
        m = rule.search(where)
        if m is not None:
            return _resolve(rule, m, where, phase), _line_at(where, m.start())
    return None


def _line_at(text: str, pos: int) -> str:
    if text[pos:pos + 1] == "\n":  # a pattern anchored at a line start begins with its newline
        pos += 1
    end = text.find("\n", pos)
    return text[text.rfind("\n", 0, pos) + 1:len(text) if end < 0 else end].strip()


def _unrecognised(text: str) -> FailureClass | None:
    """A failure no rule knows, placed by its context; None when the text shows no failure."""
    found = _unrecognised_at(text)
    return found[0] if found else None


def _unrecognised_at(text: str) -> tuple[FailureClass, str] | None:
    m = _EXCEPTION_LINE.search(text) or _FAILURE.search(text)  # an exception line is where frames are
    if m is None:
        return None
    where = _context(text, m.start())
    cls = (_F.CONSTRUCTION_ERROR if where in _BUILDING
           else _F.TEARDOWN_ERROR if where is Phase.TEARDOWN else _F.ASSERTION)
    return cls, _line_at(text, m.start())


def _session_passed(text: str) -> bool:
    """pytest summaries are present and none reports a failure or error (nor did the CI step fail)."""
    bodies = _SUMMARY.findall(text)
    return (bool(bodies) and not any(_SUMMARY_FAILED.search(b) for b in bodies)
            and not _NONZERO_EXIT.search(text))


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def classify_text(text: str) -> FailureClass:
    """The failure class of any log or traceback text; `FailureClass.NONE` when it shows none."""
    return explain_text(text)[0]


def explain_text(text: str) -> tuple[FailureClass, str | None]:
    """`classify_text`, with the line that decided it (as read: prefixes such as timestamps and
    pytest's ``E`` gone); None when the text shows no failure and no test summary."""
    norm = _normalize(text[-MAX_SCAN_BYTES:])
    m = _CRASH_RULE.search(norm)
    if m is not None:
        return _F.CRASH, _line_at(norm, m.start())
    if _session_passed(norm):
        return _F.NONE, _line_at(norm, _SUMMARY.search(norm).start())
    return _decide_at(norm, None, rules=_RULES[1:]) or _unrecognised_at(norm) or (_F.NONE, None)


def classify_step(phase: Phase | str | None, error_type: str, message: str, traceback: str = "",
                  log_tail: str = "") -> FailureClass:
    """The failure class of a step that failed in ``phase`` (None: unknown, read from the text).

    ``error_type``/``message`` are the exception's; ``log_tail`` is the step's log, where an engine
    process printed the root cause of the exception the step saw. Never `FailureClass.NONE`.
    """
    phase = Phase(phase) if phase else None
    head = f"{error_type}: {message}" if error_type else message
    own = _normalize(f"{head}\n{traceback}")
    text = f"{own}\n{_normalize(log_tail[-MAX_SCAN_BYTES:])}"
    found = _decide(text, phase, own=own)
    if found is not None:
        return found
    if phase in _BUILDING:
        return _F.CONSTRUCTION_ERROR
    if phase is Phase.TEARDOWN:
        return _F.TEARDOWN_ERROR
    if phase in (Phase.WORKLOAD, Phase.EXPECT):
        return _F.ASSERTION  # generate() raised something that is neither an OOM nor a dead engine
    return _unrecognised(text) or _F.ASSERTION


def classify_file(path: str | os.PathLike[str]) -> FailureClass:
    """`classify_text` of a file (its last `MAX_SCAN_BYTES`). Raises `InputError` when the file
    cannot be read."""
    return explain_file(path)[0]


def explain_stream(stream: BinaryIO) -> tuple[FailureClass, str | None]:
    """`explain_text` of a stream read to its end (standard input), keeping its last `MAX_SCAN_BYTES`.
    Raises `InputError` when it held nothing."""
    tail = bytearray()
    while chunk := stream.read(1 << 20):
        tail += chunk
        if len(tail) > 2 * MAX_SCAN_BYTES:
            del tail[:-MAX_SCAN_BYTES]
    if not tail.strip():
        raise InputError("-: standard input was empty, nothing to classify")
    return explain_text(bytes(tail[-MAX_SCAN_BYTES:]).decode("utf-8", errors="replace"))


def explain_file(path: str | os.PathLike[str]) -> tuple[FailureClass, str | None]:
    """`explain_text` of a file (its last `MAX_SCAN_BYTES`)."""
    name = os.fspath(path)
    data = boundedread.read(name, MAX_SCAN_BYTES, lambda msg: InputError(f"{name}: {msg}"), "a log file",
                            tail=True)
    return explain_text(data.decode("utf-8", errors="replace"))
