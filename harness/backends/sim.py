"""The simulated device (`backend: sim`): an MI250 GCD as far as the teardown-leak bug is concerned.

An engine takes `gpu_memory_utilization x total` of every device it uses from the run's ledger
(harness.sim.ledger) after vLLM's start-up check, and holds it until it is shut down or garbage
collected. How it is held is the real mechanism, not a rule table:

- the engine sits in a reference cycle (the LLM and its engine point at each other), so `del llm`
  alone frees nothing;
- construction ends with `gc.freeze()`, as vLLM's does, so a plain `gc.collect()` does not see the
  cycle either;
- a `weakref.finalize` gives the memory back when the cycle is finally collected
  (`gc.unfreeze(); gc.collect()`, what cleanup_dist_env_and_memory does);
- `llm.llm_engine.engine_core.shutdown()` gives it back at once (idempotent);
- a process that exits holding memory is caught by the ledger's dead-owner rule.

Given-back memory becomes free only after the release delay (ROCm's lazy reclaim), so the same
teardown actions that fail or pass on a real MI250 fail or pass here.
"""

from __future__ import annotations

import gc
import os
import platform as _platform
import time
import weakref
from pathlib import Path
from typing import Any, Sequence

from harness.device import DEFAULT_GPU_MEMORY_UTILIZATION, GIB, probes
from harness.sim.device import DEFAULTS
from harness.sim.ledger import Ledger, LedgerRunnerHooks
from harness.sim.sampler import Sampler
from harness.worker import faults
DEFAULT_MODEL = "facebook/opt-125m"   # vLLM's default model


class SimBackend:
    name = "sim"

    def __init__(self, plan: dict[str, Any]):
        self._plan = plan
        self._sim = {**DEFAULTS, **(plan.get("sim") or {})}
        self._ledger = Ledger(plan["ledger"], self._sim)
        self._devices = list(plan.get("devices") or [0])
        self._inject = plan.get("inject") or {}
        self._probe = SimProbe(self._ledger, self._sim["device_name"])

    @property
    def release_delay_s(self) -> float:
        """The reclaim delay of the engine built now: an injected lazy release lengthens the
        device's own (in every step, or in the one step it names)."""
        return float(self._sim["release_delay_s"]) + faults.slow_release_s(self._inject)

    # ------------------------------------------------------------------ protocol
    def info(self) -> dict[str, Any]:
        return {"platform": self._plan.get("platform", "rocm"), "device_name": self._sim["device_name"],
                "vllm_version": "sim", "torch_version": "none", "python": _platform.python_version(),
                "probe": self._probe.name}

    def probe(self) -> SimProbe:
        return self._probe

    def construct(self, engine_args: dict[str, Any]) -> SimLLM:
        """vLLM's start-up as far as memory goes: the engine build (mostly waiting), the free-memory
        check on every device the engine uses, then the allocation of weights and KV cache."""
        time.sleep(float(self._sim["construct_s"]))
        util = float(engine_args.get("gpu_memory_utilization") or DEFAULT_GPU_MEMORY_UTILIZATION)
        logical = self._engine_devices(int(engine_args.get("tensor_parallel_size") or 1))
        physical = probes.physical_ids(logical)
        requested = [self._check_startup(d, p, util) for d, p in zip(logical, physical)]
        model = str(engine_args.get("model") or DEFAULT_MODEL)
        allocation = _Allocation(self._ledger, self.release_delay_s)
        for p, nbytes in zip(physical, requested):
            allocation.take(p, nbytes, f"engine {model} (pid {os.getpid()})")
        llm = SimLLM(model, int(engine_args.get("seed") or 0), int(engine_args.get("max_model_len") or 2048),
                     allocation)
        gc.freeze()  # as vLLM does after start-up: from here on gc.collect() skips the engine
        return llm

    def generate(self, llm: SimLLM, prompts: list[str], sampling: dict[str, Any]) -> list[dict]:
        return llm.generate(prompts, sampling)

    def cleanup_dist_env(self) -> None:
        """What upstream's cleanup_dist_env_and_memory does for memory."""
        gc.unfreeze()
        gc.collect()
        self.empty_cache()

    def engine_process(self) -> str:
        return "in-process"  # the simulated engine is an object of the worker

    def empty_cache(self) -> None:
        """Nothing is cached: the ledger holds only what engines hold."""

    # ------------------------------------------------------------------ start-up checks
    def _engine_devices(self, tensor_parallel_size: int) -> list[int]:
        if tensor_parallel_size > len(self._devices):
            raise ValueError(f"tensor_parallel_size ({tensor_parallel_size}) is larger than the number of "
                             f"devices given to this worker ({len(self._devices)})")
        return self._devices[:tensor_parallel_size]

    def _check_startup(self, logical: int, physical: str, util: float) -> int:
        """vLLM's start-up memory checks, in its words (ROCm builds also say cuda:N). Returns the
        bytes the engine will take on this device."""
        used, total = self._ledger.read([physical])[0]
        free, requested = total - used, int(util * total)
        if free < requested:
            raise ValueError(
                f"Free memory on device cuda:{logical} ({free / GIB:.2f}/{total / GIB:.2f} GiB) on startup is "
                f"less than desired GPU memory utilization ({util}, {requested / GIB:.2f} GiB). Decrease GPU "
                f"memory utilization or reduce GPU memory used by other processes.")
        if float(self._sim["weights_gib"]) * GIB >= requested:
            raise ValueError("No available memory for the cache blocks. Try increasing "
                             "`gpu_memory_utilization` when initializing the engine.")
        return requested


class SimProbe:
    """Device memory as the ledger counts it, by logical index (mapped through the visible-devices
    variables, so GPU pinning per pytest-xdist worker works on the simulated node)."""

    name = "sim"

    def __init__(self, ledger: Ledger, device_name: str):
        self._ledger = ledger
        self._device_name = device_name

    def read(self, devices: Sequence[int]) -> list[tuple[int, int]]:
        return self._ledger.read(probes.physical_ids(devices))

    def pending(self, devices: Sequence[int]) -> list[int]:
        """Released memory the device has not given back yet (a wait will see it come back)."""
        return self._ledger.pending(probes.physical_ids(devices))

    def device_name(self, device: int) -> str:
        return self._device_name


# ---------------------------------------------------------------------- the engine
class _Allocation:
    """The ledger entries of one engine. It never refers to the engine, so the finalizer that
    holds it does not keep the engine alive."""

    def __init__(self, ledger: Ledger, delay_s: float):
        self._ledger = ledger
        self._delay_s = delay_s
        self._entries: list[int] = []

    def take(self, device: str, nbytes: int, owner: str) -> None:
        try:
            self._entries.append(self._ledger.allocate(device, nbytes, owner, os.getpid(), delay_s=self._delay_s))
        except Exception:
            self.release()  # a device that does not fit gives back what the others took
            raise

    def release(self) -> None:
        entries, self._entries = self._entries, []
        for entry in entries:
            self._ledger.release(entry, self._delay_s)

    @property
    def held(self) -> bool:
        return bool(self._entries)


class SimEngineCore:
    def __init__(self, allocation: _Allocation):
        self._allocation = allocation
        self.is_shut_down = False

    def shutdown(self) -> None:
        """Give the device memory back (free after the release delay). Safe to call twice."""
        self._allocation.release()
        self.is_shut_down = True


class SimLLMEngine:
    def __init__(self, llm: SimLLM, engine_core: SimEngineCore):
        self.llm = llm  # the back-reference that makes LLM <-> engine a cycle, as in vLLM
        self.engine_core = engine_core


class SimLLM:
    """What `vllm.LLM(...)` returns, as far as the harness uses it."""

    def __init__(self, model: str, seed: int, max_model_len: int, allocation: _Allocation):
        self.model = model
        self.llm_engine = SimLLMEngine(self, SimEngineCore(allocation))
        self._sampler = Sampler(model, seed, max_model_len)
        # Collected (only ever through the cycle collector): give the memory back. Not at
        # interpreter exit: then the ledger's dead-owner rule applies, as to a killed process.
        finalizer = weakref.finalize(self, allocation.release)
        finalizer.atexit = False

    def generate(self, prompts: str | list[str], sampling_params: dict[str, Any] | None = None,
                 use_tqdm: bool = False) -> list[dict]:
        if self.llm_engine.engine_core.is_shut_down:
            raise RuntimeError("EngineCore has been shut down; build a new LLM")
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        return self._sampler.generate(prompts, sampling_params or {})


class SimRunnerHooks(LedgerRunnerHooks):
    """The runner's side of the simulated device: the ledger is the device."""

    def settle(self, rplan: Any, ledger: Path, devices: list[int]) -> None:
        """On ROCm a finished process's VRAM returns lazily, and that must not be blamed on the next
        variant: wait until the device is back at its baseline (or the worker-start timeout passes)."""
        if not ledger.exists():
            return
        sim = rplan.scenario.sim
        probe = SimBackend({"sim": {k: getattr(sim, k) for k in sim.__dataclass_fields__}, "ledger": str(ledger),
                            "devices": devices, "inject": {}, "platform": rplan.platform}).probe()
        deadline = time.monotonic() + rplan.scenario.timeouts.worker_start
        baseline = sim.baseline_gib * GIB
        while time.monotonic() < deadline:
            if all(used <= baseline + (64 << 20) for used, _ in probe.read(devices)):
                return
            time.sleep(0.05)
