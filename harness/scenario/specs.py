"""What a scenario may name, as data: the teardown actions and their parameters, the expectation
checks and what their arguments may be, the simulated device's settings, the modelled device's
(`inject: device_model`, harness/devicemodel).

The schema (scenario/schema.py) validates a scenario against these; the run stage attaches the code
(run/teardown.py runs the actions, run/expect.py the checks, harness/sim the device). Standard
library only: the worker imports it too.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable


# --------------------------------------------------------------------------- built-in models
BUILTIN_PREFIX = "builtin:"
#: models the harness builds itself (run/tinymodel.py); a scenario names them as ``model: builtin:NAME``
BUILTIN_MODELS = ("builtin:tiny-llama",)


# --------------------------------------------------------------------------- teardown actions
@dataclass(frozen=True)
class ActionParams:
    params: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    doc: str = ""


ACTIONS: dict[str, ActionParams] = {
    "engine_core_shutdown": ActionParams(params=("timeout_s", "ignore_errors"),
                                         doc="llm.llm_engine.engine_core.shutdown(timeout=timeout_s); "
                                             "ignore_errors: as upstream's try/except around it"),
    "del_llm": ActionParams(doc="drop the worker's reference to the LLM (`del llm`)"),
    "gc_collect": ActionParams(doc="gc.collect()"),
    "gc_unfreeze": ActionParams(doc="gc.unfreeze(): vLLM gc.freeze()s its objects after start-up"),
    "dynamo_reset": ActionParams(doc="torch._dynamo.reset()"),
    "cleanup_dist_env": ActionParams(doc="vllm.distributed.cleanup_dist_env_and_memory()"),
    "empty_cache": ActionParams(doc="torch.cuda.empty_cache() (or the platform's equivalent)"),
    "wait_memory": ActionParams(params=("threshold", "timeout_s", "poll_s", "stable_s", "floor_bytes"),
                                doc="wait until used memory <= max(threshold, floor_bytes) on every device, "
                                    "and has stayed there (within 512 MiB) for stable_s"),
    "sleep": ActionParams(params=("seconds",), required=("seconds",), doc="time.sleep(seconds)"),
    "call": ActionParams(params=("target", "kwargs"), required=("target",),
                         doc="call the user's module:function(ctx, **kwargs)"),
}


# --------------------------------------------------------------------------- expectation checks
#: A check's argument validator: (argument, the step's workload) -> the problem, or None.
Validator = Callable[[Any, Any], "str | None"]


def _sets_or_true(arg: Any, workload: Any) -> str | None:
    if arg is True:
        return None
    if not isinstance(arg, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in arg):
        return "expected true or a list of sampling indices"
    bad = [i for i in arg if not 0 <= i < len(workload.sampling)]
    return f"sampling index {bad[0]} does not exist (workload has {len(workload.sampling)})" if bad else None


def _validate_identical(arg, workload):
    if workload.runs < 2:
        return "needs workload.runs >= 2"
    return _sets_or_true(arg, workload)


def _validate_pairs(arg, workload):
    if arg is True:
        return "expected a list of [i, j] pairs of sampling indices"
    return _validate_distinct(arg, workload)


def _validate_distinct(arg, workload):
    n = len(workload.sampling)
    if arg is True:
        return None if n >= 2 else "needs at least two sampling sets"
    if not isinstance(arg, list) or not all(isinstance(p, list) and len(p) == 2 for p in arg):
        return "expected true or a list of [i, j] pairs of sampling indices"
    for p in arg:
        for i in p:
            if not isinstance(i, int) or not 0 <= i < n:
                return f"sampling index {i!r} does not exist (workload has {n})"
    return None


#: check name -> its argument's validator
CHECKS: dict[str, Validator] = {
    "identical_runs": _validate_identical,
    "distinct": _validate_distinct,
    "same_output": _validate_pairs,
    "logprobs": _sets_or_true,
    "lengths": _sets_or_true,
    "stop": _sets_or_true,
    "bad_words": _sets_or_true,
    "n_completions": _sets_or_true,
    "nonempty": _sets_or_true,
}


# --------------------------------------------------------------------------- the simulated device
@dataclass(frozen=True)
class SimDevice:
    """A scenario's `sim:` section, with an MI250 GCD's defaults."""

    total_gib: float = 64.0
    baseline_gib: float = 0.5  # used by other tenants
    release_delay_s: float = 0.0  # released memory becomes free only this much later (ROCm's lazy reclaim)
    release_jitter_s: float = 0.0  # plus a seeded random extra delay up to this
    seed: int = 0
    construct_s: float = 0.0  # an engine build mostly waits
    weights_gib: float = 2.0
    device_name: str = "AMD Instinct MI250X/MI250 (simulated)"
    count: int = 8  # devices on the simulated node (an MI250 node shows 8 GCDs)


# --------------------------------------------------------------------------- the modelled device
@dataclass(frozen=True)
class DeviceModel:
    """Stable keys of `inject: device_model`. An MI250 GCD by default."""

    total_gib: float = 64.0
    release_delay_s: float = 8.0  # released memory counts as used this much longer (ROCm's lazy reclaim)
    baseline_gib: float = 0.5  # used by the driver and other tenants
    release_jitter_s: float = 0.0  # plus a seeded random extra delay up to this
    seed: int = 0
    device_name: str = "AMD Instinct MI250X/MI250"

    def ledger_config(self) -> dict[str, Any]:
        """What harness.sim.ledger.Ledger is initialised with (8 devices, as a node shows)."""
        return {"total_gib": self.total_gib, "baseline_gib": self.baseline_gib, "count": 8,
                "release_delay_s": self.release_delay_s, "release_jitter_s": self.release_jitter_s,
                "seed": self.seed}

    def describe(self) -> str:
        return f"{self.device_name}, {self.total_gib:g} GiB, release delay {self.release_delay_s:g} s"


DEVICE_MODEL_KEYS = tuple(f.name for f in fields(DeviceModel))

#: the device a rehearsal models, by the scenario's platform
DEVICE_MODEL_PRESETS: dict[str, DeviceModel] = {
    "rocm": DeviceModel(),
    # CUDA gives memory back at once; 79.18 GiB is an H100 80GB as vLLM counts it
    "cuda": DeviceModel(total_gib=79.18, release_delay_s=0.0, baseline_gib=0.5,
                        device_name="NVIDIA H100 80GB HBM3"),
}
