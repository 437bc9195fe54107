"""Result vocabulary shared by every stage: outcomes, failure classes, verdicts, step results.

Only the standard library is imported here: the worker imports this module inside other
interpreters (another vLLM build) that may have nothing but vLLM installed.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any


# How the JUnit file says that a step never ran because its worker broke (results/events.py writes
# them, results/verdict.py reads them): such a variant did not run its steps, and no verdict on it
# may pass.
NOT_RUN = "not run: "  # the message of a skipped step the worker never started
NEVER_STARTED = "WorkerDied: the worker exited before its first step"  # the first step's failure


# The worker's exit status when it cannot write its events (a full disk): the runner stops the run.
EXIT_DISK_FULL = 74  # EX_IOERR
EXIT_INFRASTRUCTURE = 3  # ★ exit codes of run.py (README.md)
EXIT_INTERRUPTED = 130
DISK_FULL_ERRNOS = (28, 122, 27)  # ENOSPC, EDQUOT, EFBIG (a file-size limit) on Linux


class FailureClass(str, enum.Enum):
    """Why a step failed. The string values are a contract (docs/architecture.md, contracts)."""

    VRAM_CONSTRUCTION = "vram_construction"
    CONSTRUCTION_ERROR = "construction_error"
    OOM_RUNTIME = "oom_runtime"
    ASSERTION = "assertion"
    CRASH = "crash"
    TIMEOUT = "timeout"
    TEARDOWN_ERROR = "teardown_error"
    NONE = "none"

    def __str__(self) -> str:
        return self.value


class Outcome(str, enum.Enum):
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"

    def __str__(self) -> str:
        return self.value

    def __bool__(self) -> bool:  # truthy when it passed, like nox's Status
        return self is Outcome.PASSED


class Phase(str, enum.Enum):
    """Where in a step something happened."""

    SETTLE = "settle"  # waiting for memory before construction (profile `settle`)
    CONSTRUCT = "construct"
    WORKLOAD = "workload"
    EXPECT = "expect"
    TEARDOWN = "teardown"

    def __str__(self) -> str:
        return self.value


class Verdict(str, enum.Enum):
    FIX_CONFIRMED = "fix confirmed"
    NOT_REPRODUCED = "not reproduced"
    NOT_PROVEN = "not proven"  # the baseline's VRAM failures passed with the fix without building an engine
    BASELINE_BROKEN = "baseline broken"  # the baseline failed for reasons other than the leak
    FIX_INSUFFICIENT = "fix insufficient"
    REGRESSION = "regression"

    def __str__(self) -> str:
        return self.value

    @property
    def exit_code(self) -> int:
        """0 when the fixed variant is clean, 1 when a VRAM failure or regression remains."""
        return 0 if self in (Verdict.FIX_CONFIRMED, Verdict.NOT_REPRODUCED) else 1


@dataclass
class Expectation:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class MemorySample:
    """Device memory in use, summed over the step's devices, right after ``label``; ``per_device``
    holds each device's figure (in the worker's device order) when the probe gave one per device."""

    label: str
    t: float
    used_bytes: int
    total_bytes: int
    per_device: list[int] = field(default_factory=list)


@dataclass
class StepResult:
    """One test case: one step of one variant in one repeat."""

    step: str
    repeat: int
    outcome: Outcome
    failure_class: FailureClass = FailureClass.NONE
    phase: Phase | None = None
    message: str = ""
    traceback: str = ""
    log_tail: str = ""
    duration_s: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    actions: list[dict[str, Any]] = field(default_factory=list)
    memory: list[MemorySample] = field(default_factory=list)
    expectations: list[Expectation] = field(default_factory=list)
    release_latency_s: float | None = None
    release_after_free_s: float | None = None  # lazy_release injected: the wait's lateness after the real release
    threshold_bytes: int | None = None
    classname: str | None = None  # a pytest suite's test: as `pytest --junitxml` names it (default: the scenario)
    builds: list[dict[str, Any]] = field(default_factory=list)  # engine builds of a pytest suite's test
    log_facts: dict[str, int] = field(default_factory=dict)  # results/logfacts.py: counts in the step's log
    wait_s: float | None = None  # seconds in memory waits: its settle and teardown (and upstream's helpers)
    live_engine_built_by: str = ""  # a wait that could never end: the steps that built the live engines
    engine_followed: bool = False  # the worker followed its engines' lives (engine_freed_at means something)
    engine_freed_at: float | None = None  # epoch seconds its (last) engine object was freed; None: never
    ended_at: float | None = None  # epoch seconds of its end (readings after it: a fixture's later teardown)
    engine_process: str | None = None  # "child" (vLLM's EngineCore process) or "in-process"
    probe_disagreement: tuple[int, str] | None = None  # the two probes' largest gap over 1 GiB, and where

    def case_name(self, repeats: int) -> str:
        return f"{self.step}[{self.repeat}]" if repeats > 1 else self.step

    def engines_built(self) -> int:
        """Engines this step (a pytest suite's test: its builds) really built: those with an
        ``after_construct`` reading. A pass that built none is no evidence about memory."""
        if self.builds:
            return sum("after_construct" in b.get("memory", {}) for b in self.builds)
        return int(any(m.label == "after_construct" for m in self.memory))

    def construct_at(self) -> float | None:
        """When its construction began (its first ``before_construct`` reading); a construction
        that was waited for and never began: its last reading; None without readings."""
        start = next((m.t for m in self.memory if m.label == "before_construct"), None)
        return start if start is not None else (self.memory[-1].t if self.memory else None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StepResult":
        d = dict(d)
        d["outcome"] = Outcome(d["outcome"])
        d["failure_class"] = FailureClass(d.get("failure_class", "none"))
        d["phase"] = Phase(d["phase"]) if d.get("phase") else None
        d["memory"] = [MemorySample(**m) for m in d.get("memory", [])]
        d["expectations"] = [Expectation(**e) for e in d.get("expectations", [])]
        return cls(**d)


@dataclass
class VariantResult:
    """Every step of one variant, plus what the worker reported about its environment."""

    variant: str
    profile: str
    steps: list[StepResult] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)  # platform, device, vllm_version...
    orphans: list[dict[str, Any]] = field(default_factory=list)
    exit_status: str = ""  # "ok", "timeout", "crash: SIGKILL", "interrupted"
    problems: list[str] = field(default_factory=list)  # a pytest suite that could not be collected


@dataclass(frozen=True)
class Substitution:
    """One change the plan made to what the scenario asked for, to run it on this machine (a
    rehearsal's model and platform, an engine argument the CPU refuses, an environment value):
    printed before anything runs, recorded in run.json, the JUnit files and the report."""

    what: str  # "model", "platform", "dtype", ...
    before: str
    after: str
    reason: str

    def __str__(self) -> str:
        return f"{self.what}: {self.before} -> {self.after} ({self.reason})"

