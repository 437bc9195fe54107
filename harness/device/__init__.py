"""The device layer: what every other layer may assume about a device, defined once.

The contracts (`Backend`, `Probe`, `RunnerHooks`) and the constants shared by the worker, the
runner and the reports. A leaf: it imports nothing of the harness, so a backend, a probe or the
modelled device implements these contracts without importing anything above it. The
implementations are found through name tables (`harness.backends.BACKENDS`, `harness.backends.PROBES`).

Standard library only: the worker imports it in any interpreter that has vLLM.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, Sequence

GIB = 2**30
#: vllm.LLM's default ``gpu_memory_utilization``
DEFAULT_GPU_MEMORY_UTILIZATION = 0.9
#: the environment variable naming the simulated (or modelled) device's ledger file of a run
LEDGER_ENV = "HARNESS_SIM_LEDGER"


class Probe(Protocol):
    """Reads device memory."""

    name: str

    def read(self, devices: Sequence[int]) -> list[tuple[int, int]]:
        """(used_bytes, total_bytes) per logical device index."""

    def device_name(self, device: int) -> str:
        """The device's name as shown in reports."""


class Backend(Protocol):
    """What builds engines inside the worker (docs/architecture.md, "Backends")."""

    name: str

    def info(self) -> dict[str, Any]: ...
    def probe(self) -> Probe: ...
    def construct(self, engine_args: dict[str, Any]) -> Any: ...
    def generate(self, llm: Any, prompts: list[str], sampling: dict[str, Any]) -> list[dict]: ...
    def cleanup_dist_env(self) -> None: ...
    def empty_cache(self) -> None: ...
    def engine_process(self) -> str: ...  # one of ENGINE_PROCESSES: where the engine's memory lives


#: JUnit ``engine_process``: vLLM's EngineCore in its own process (vLLM's default), or in the caller's
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


class RunnerHooks:
    """What the runner, in the parent process, asks of a backend around its workers. The real
    devices need nothing; the simulated and the modelled one live in the run's ledger."""

    def settle(self, rplan: Any, ledger: Path, devices: list[int]) -> None:
        """Before a worker starts: wait (bounded) until the previous worker's memory has come back."""

    def orphan_memory(self, ledger: Path, pid: int) -> dict[str, Any]:
        """How much device memory a leftover process holds, so the report can name it."""
        return {}

    def finish(self, ledger: Path) -> None:
        """After the last worker: tidy what the workers left (a ledger's half-done write)."""
