"""Engine builders, by name: `vllm` is the real library, `sim` the simulated device (harness.sim).

The contracts they implement are the device layer's (`harness.device.Backend`, `RunnerHooks`);
this package only names the implementations.
"""

from __future__ import annotations

from typing import Any, Callable

from harness.backends.sim import SimBackend, SimRunnerHooks
from harness.backends.vllm import PROBES, VllmBackend
from harness.device import Backend, RunnerHooks
from harness.devicemodel.probe import DeviceModelRunnerHooks
from harness.sim.ledger import LedgerCleanup

#: a worker plan's ``backend`` -> what builds its engines (`import vllm` waits for the constructor)
BACKENDS: dict[str, Callable[[dict[str, Any]], Backend]] = {"sim": SimBackend, "vllm": VllmBackend}
#: a scenario's backend -> what the runner asks of it around its workers
RUNNER_HOOKS: dict[str, Callable[[], RunnerHooks]] = {"sim": SimRunnerHooks, "vllm": LedgerCleanup}

__all__ = ["BACKENDS", "PROBES", "RUNNER_HOOKS", "load", "runner_hooks"]


def load(plan: dict[str, Any]) -> Backend:
    """The backend a worker plan asks for."""
    return BACKENDS[plan["backend"]](plan)


def runner_hooks(backend: str, device_model: Any = None) -> RunnerHooks:
    """The hooks of `backend`; with `device_model` (a scenario.specs.DeviceModel), the modelled device's."""
    if device_model is not None:
        return DeviceModelRunnerHooks(device_model)
    return RUNNER_HOOKS[backend]()
