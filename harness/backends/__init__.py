"""Engine builders. `vllm` is the real library; `sim` is the simulated device (harness.sim)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol


class Backend(Protocol):
    name: str

    def info(self) -> dict[str, Any]: ...
    def probe(self) -> Any: ...
    def construct(self, engine_args: dict[str, Any]) -> Any: ...
    def generate(self, llm: Any, prompts: list[str], sampling: dict[str, Any]) -> list[dict]: ...
    def cleanup_dist_env(self) -> None: ...
    def empty_cache(self) -> None: ...
    def engine_process(self) -> str: ...  # ENGINE_PROCESSES: where the engine's device memory lives


ENGINE_PROCESSES = ("child", "in-process")
MULTIPROCESSING_ENV = "VLLM_ENABLE_V1_MULTIPROCESSING"


def vllm_engine_process(env: dict[str, str] | None = None) -> str:
    """Where vLLM V1 runs its EngineCore: a child process unless VLLM_ENABLE_V1_MULTIPROCESSING=0
    (vLLM's default is 1; it reads the variable as an int, as here)."""
    import os

    value = (os.environ if env is None else env).get(MULTIPROCESSING_ENV, "1")
    try:
        return "child" if int(value) else "in-process"
    except ValueError:
        return "child"


def load(plan: dict[str, Any]) -> Backend:
    """The backend a worker plan asks for (imported lazily: `import vllm` is slow)."""
    if plan["backend"] == "sim":
        from harness.backends.sim import SimBackend

        return SimBackend(plan)
    from harness.backends.vllm import VllmBackend

    return VllmBackend(plan)


class RunnerHooks:
    """What the runner, in the parent process, asks of a backend around its workers. The real
    devices need nothing; the simulated one (backends/sim.py) lives in the run's ledger."""

    def settle(self, rplan: Any, ledger: Path, devices: list[int]) -> None:
        """Before a worker starts: wait (bounded) until the previous worker's memory has come back."""

    def orphan_memory(self, ledger: Path, pid: int) -> dict[str, Any]:
        """How much device memory a leftover process holds, so the report can name it."""
        return {}

    def finish(self, ledger: Path) -> None:
        """After the last worker: a ledger write a killed worker left half done is discarded."""
        if ledger.exists():
            from harness.sim.ledger import Ledger

            Ledger(ledger).discard_partial_write()


def runner_hooks(backend: str, device_model: Any = None) -> RunnerHooks:
    """The hooks of `backend`; with `device_model` (a scenario.specs.DeviceModel), the modelled device's."""
    if device_model is not None:
        from harness.devicemodel.probe import DeviceModelRunnerHooks

        return DeviceModelRunnerHooks(device_model)
    if backend == "sim":
        from harness.backends.sim import SimRunnerHooks

        return SimRunnerHooks()
    return RunnerHooks()
