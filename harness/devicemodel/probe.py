"""The probe of a run under the device model: reads the modelled device from the run's ledger,
with host memory beside it (`host`, which the worker records in every memory event); and the
runner's hooks for it (settling between workers, orphans' device memory).

Standard library only (the worker imports it); psutil comes in with the host probe.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

from harness.device import GIB
from harness.device.probes import HostProbe, physical_ids
from harness.devicemodel import charges, settings
from harness.sim.ledger import Ledger, LedgerRunnerHooks

IDLE_SLACK_BYTES = 64 << 20


class DeviceModelProbe:
    name = "devicemodel"

    def __init__(self, env: dict[str, str] | None = None) -> None:
        found = settings.from_env(env)
        if found is None:
            raise RuntimeError(f"{settings.ENV} is not set: this process does not run under the device model")
        self.model, path = found
        self.ledger = Ledger(path, self.model.ledger_config())
        self.host = HostProbe()

    def read(self, devices: Sequence[int]) -> list[tuple[int, int]]:
        own = charges.current()
        if own is not None:  # an in-process engine: its freed tensors' releases are written first
            own.flush()
        return self.ledger.read(physical_ids(devices))

    def pending(self, devices: Sequence[int]) -> list[int]:
        """Released memory the device has not given back yet (a wait will see it come back)."""
        own = charges.current()
        if own is not None:
            own.flush()
        return self.ledger.pending(physical_ids(devices))

    def device_name(self, device: int) -> str:
        return f"{self.model.device_name} (modelled on vLLM-CPU)"


def wait_idle(probe: DeviceModelProbe, devices: Sequence[int], timeout_s: float) -> bool:
    """Wait until nothing but the baseline is used on `devices` (the previous worker's memory has
    come back); False if it has not within `timeout_s`."""
    idle = probe.model.baseline_gib * GIB + IDLE_SLACK_BYTES
    deadline = time.monotonic() + timeout_s
    while not all(used <= idle for used, _ in probe.read(devices)):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


class DeviceModelRunnerHooks(LedgerRunnerHooks):
    """The runner's side of the modelled device: the run's ledger is the device."""

    def __init__(self, model: settings.DeviceModel):
        self.model = model

    def settle(self, rplan: Any, ledger: Path, devices: list[int]) -> None:
        """A finished worker's memory comes back after the release delay; the next variant must
        not start before it (ROCm's reclaim is not the next variant's fault)."""
        if ledger.exists():
            probe = DeviceModelProbe({settings.ENV: settings.to_env(self.model, ledger)})
            wait_idle(probe, devices, rplan.scenario.timeouts.worker_start)
