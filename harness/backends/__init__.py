"""Engine builders. `vllm` is the real library; `sim` is the simulated device (harness.sim)."""

from __future__ import annotations

from typing import Any, Protocol


class Backend(Protocol):
    name: str

    def info(self) -> dict[str, Any]: ...
    def probe(self) -> Any: ...
    def construct(self, engine_args: dict[str, Any]) -> Any: ...
    def generate(self, llm: Any, prompts: list[str], sampling: dict[str, Any]) -> list[dict]: ...
    def cleanup_dist_env(self) -> None: ...
    def empty_cache(self) -> None: ...


def load(plan: dict[str, Any]) -> Backend:
    """The backend a worker plan asks for (imported lazily: `import vllm` is slow)."""
    if plan["backend"] == "sim":
        from harness.backends.sim import SimBackend

        return SimBackend(plan)
    from harness.backends.vllm import VllmBackend

    return VllmBackend(plan)
