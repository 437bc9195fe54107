"""The event vocabulary: every event a worker writes to its events file (one JSON object per line)
and the runner, the results and the reports read, by name, with its payload.

Writers emit these names (harness/worker/, harness/upstream/); readers dispatch on them by name
(``getattr(self, "on_" + name)``: harness/run/runner.py, harness/results/events.py,
harness/report/console.py, harness/report/timeline.py). docs/architecture.md's events table is
this module's. Standard library only: the worker imports it.

Every event has `Common` (``t``, ``event``, ``variant``, ``repeat``); a step's events also have
`StepKey` (``step``, ``index``); an engine build's events of a pytest suite's test also ``build``.
"""

from __future__ import annotations

from typing import Any, TypedDict

WORKER_START = "worker_start"
STEP_START = "step_start"
PHASE_START = "phase_start"
PHASE_END = "phase_end"
MEMORY = "memory"
ACTION = "action"
THRESHOLD = "threshold"
STEP_END = "step_end"
WORKER_END = "worker_end"
# a pytest suite's worker
COLLECTED = "collected"
COLLECT_ERROR = "collect_error"
ENGINE_START = "engine_start"
ENGINE_END = "engine_end"
ENGINE_FREED = "engine_freed"  # an engine object of a step was freed (and its EngineCore processes exited)

#: the keys every event has, and those that place it in a step or an engine build
COMMON_KEYS = frozenset({"t", "event", "variant", "repeat"})
PLACE_KEYS = frozenset({"step", "index", "build"})


class Common(TypedDict):
    t: float  # epoch seconds
    event: str
    variant: str
    repeat: int


class StepKey(TypedDict):
    step: str  # the step's name (a pytest suite's test: its JUnit name)
    index: int  # its position in the worker plan (or in the collected tests)


class WorkerStart(Common):
    pid: int
    info: dict[str, Any]  # platform, device_name, vllm_version, torch_version, python, probe, probe_second,
    #                       total_bytes, devices


class StepStart(Common, StepKey):
    timeout_s: float
    log_offset: int  # byte offset in the variant's log
    engine_process: str  # harness.device.ENGINE_PROCESSES: "child" (vLLM's default) or "in-process"


class PhaseStart(Common, StepKey):
    phase: str  # harness.model.Phase


class PhaseEnd(PhaseStart):
    duration_s: float


class Memory(Common, StepKey, total=False):
    label: str  # before_construct, after_construct, after_workload, after_<action>, after_test
    used_bytes: int  # summed over the worker's devices
    total_bytes: int
    per_device: list[int]
    host_used_bytes: int  # the modelled device only: the host probe's reading beside it
    second_probe: str  # a second probe of the device (harness/device/probes.py: beside)
    second_used_bytes: int  # its reading
    second_error: str  # why it could not read
    probe_disagreement_bytes: int  # the two readings' largest gap over a device, when over 1 GiB


class Action(Common, StepKey):
    name: str
    duration_s: float
    used_bytes: int
    ok: bool
    error: str


class Threshold(Common, StepKey):
    threshold_bytes: int  # (1 - gpu_memory_utilization) x total: what a teardown must get back under
    engine_bytes: int


class StepEnd(Common, StepKey, total=False):
    outcome: str  # harness.model.Outcome
    phase: str  # where it failed
    error_type: str
    message: str
    traceback: str
    expectations: list[dict[str, Any]]
    release_latency_s: float | None
    release_after_free_s: float  # with lazy_release injected
    log_offset: int
    wait_s: float  # seconds in memory waits: settle, teardown, upstream's own wait helpers
    live_engine_built_by: str  # a wait that could never end: the steps that built the live engines


class WorkerEnd(Common, total=False):
    pytest_exit: int  # a pytest suite's session exit code


class Collected(Common):
    tests: list[dict[str, Any]]  # name, classname, nodeid, index, timeout_s (as pytest --junitxml names them)


class CollectError(Common):
    where: str
    classname: str
    name: str
    module: str | None  # the module that could not be imported
    text: str


class EngineStart(Common, StepKey, total=False):
    build: int
    via: str
    model: str
    substitutions: list[str]
    construct_s: float
    error: str


class EngineEnd(Common, StepKey, total=False):
    build: int
    torn_down_by: str
    release_latency_s: float | None


class EngineFreed(Common, StepKey, total=False):
    build: int  # a pytest suite's engine build
    freed_at: float  # epoch seconds; may come during a later step


#: every event's payload type, by name
PAYLOADS: dict[str, type] = {
    WORKER_START: WorkerStart, STEP_START: StepStart, PHASE_START: PhaseStart, PHASE_END: PhaseEnd,
    MEMORY: Memory, ACTION: Action, THRESHOLD: Threshold, STEP_END: StepEnd, WORKER_END: WorkerEnd,
    COLLECTED: Collected, COLLECT_ERROR: CollectError, ENGINE_START: EngineStart, ENGINE_END: EngineEnd,
    ENGINE_FREED: EngineFreed,
}
NAMES = frozenset(PAYLOADS)


def dispatch(handler: object, event: dict[str, Any]) -> Any:
    """Call ``handler.on_<name>(event)`` for the event's name, if the handler has one (a reader
    handles the events it cares about and ignores the rest, a foreign name included)."""
    name = event.get("event")
    method = getattr(handler, f"on_{name}", None) if name in NAMES else None
    return method(event) if method is not None else None
