"""GPU pinning for pytest-xdist workers: each worker gets its own set of devices.

The devices are counted within the outer visible-device list when one is set
(``CUDA_VISIBLE_DEVICES``, ``HIP_VISIBLE_DEVICES`` or ``ROCR_VISIBLE_DEVICES``, as
``probes.visible_devices`` reads them), so a worker never sees a GPU outside it. Without one, the count
comes from ``--gpus N``, the simulated node of sim scenarios, or the driver (NVML, amdsmi).

A worker's set is handed to it as the same variable, narrowed to the set's entries: with
``CUDA_VISIBLE_DEVICES=2,3,5,7`` and one GPU per worker, gw0 gets ``CUDA_VISIBLE_DEVICES=2`` and gw3
gets ``CUDA_VISIBLE_DEVICES=7``. Everything the worker starts (the harness's worker, vLLM's
EngineCore) inherits it, and device 0 inside the worker is its first GPU.

Pure functions and one small pool; the pytest plugin does the wiring.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from harness.errors import InputError
from harness.multicast import MULTICAST_OFF
from harness.device import probes
from harness.device.probes import VISIBLE_ENV, visible_devices

# ROCm's HIP runtime reads HIP_VISIBLE_DEVICES, or CUDA_VISIBLE_DEVICES as its alias, and vLLM on ROCm
# insists that the two agree when both are set: a ROCm worker gets both, with the same value.
ROCM_VARIABLES = ("HIP_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES")
DEFAULT_VARIABLES = ("CUDA_VISIBLE_DEVICES",)


@dataclass(frozen=True)
class Devices:
    """The devices that may be handed out, and the variables that hand them out."""

    ids: tuple[str, ...]        # as the outer list spells them (indices or UUIDs), else "0".."N-1"
    source: str                 # where the list came from, for messages: "CUDA_VISIBLE_DEVICES=0,1", "--gpus 4"...
    variables: tuple[str, ...]  # set to a worker's entries (comma-separated)

    def __len__(self) -> int:
        return len(self.ids)


def probe_count(platform: str) -> tuple[int, str] | None:
    """How many GPUs the driver reports (NVML on CUDA, amdsmi on ROCm), or None where it cannot tell."""
    factory = {"cuda": probes.NvmlProbe, "rocm": probes.AmdSmiProbe}.get(platform)
    if factory is None:
        return None
    try:
        probe = factory()
        return probe.device_count(), probe.name
    except Exception:  # no library or no driver
        return None


def discover(env: Mapping[str, str], *, gpus: int | None = None, sim_count: int | None = None,
             platform: str = "cpu", probe: Callable[[str], tuple[int, str] | None] = probe_count) -> Devices:
    """The devices this session may hand out. In order: the outer visible list (the first ``gpus`` of
    it when ``--gpus`` is given), ``--gpus N``, the simulated node's count, the driver's count."""
    visible = visible_devices(dict(env))
    if visible is not None:
        var = next(v for v in VISIBLE_ENV if (env.get(v) or "").strip())
        # narrow every variable that spells the same list (vLLM on ROCm checks HIP == CUDA); a different
        # list is an outer level (ROCR_VISIBLE_DEVICES under HIP_VISIBLE_DEVICES) and is left alone
        same = tuple(v for v in VISIBLE_ENV if visible_devices({v: env.get(v, "")}) == visible)
        source = f"{var}={env[var].strip()}"
        if not visible:
            raise InputError(f"{source}: no devices are visible, there is nothing to pin")
        if gpus is not None:
            if gpus > len(visible):
                raise InputError(f"--gpus {gpus}: only {len(visible)} devices are visible ({source})")
            visible = visible[:gpus]
        return Devices(tuple(visible), source, same)
    variables = ROCM_VARIABLES if platform == "rocm" else DEFAULT_VARIABLES
    if gpus is not None:
        return Devices(tuple(str(i) for i in range(gpus)), f"--gpus {gpus}", variables)
    if sim_count is not None:
        return Devices(tuple(str(i) for i in range(sim_count)), f"simulated node ({sim_count} devices)",
                       variables)
    found = probe(platform)
    if found is not None and found[0] > 0:
        count, how = found
        return Devices(tuple(str(i) for i in range(count)), f"{how} ({count} devices)", variables)
    raise InputError("--gpus-per-worker: cannot tell how many GPUs this machine has (no visible-device "
                     f"list, and no NVML/amdsmi on this {platform} host): set CUDA_VISIBLE_DEVICES or "
                     "pass --gpus N")


def device_sets(devices: Devices, per_worker: int, workers: int) -> list[tuple[str, ...]]:
    """Consecutive, disjoint sets of ``per_worker`` devices, one per worker; refuses more workers
    than there are sets (a device left over is never shared)."""
    if per_worker < 1:
        raise InputError(f"--gpus-per-worker {per_worker}: must be at least 1")
    sets = [devices.ids[i:i + per_worker] for i in range(0, len(devices) - per_worker + 1, per_worker)]
    if workers > len(sets):
        need = workers * per_worker
        fit = (f"use -n {len(sets)} or fewer" if sets else
               f"use --gpus-per-worker {len(devices)} or fewer")
        raise InputError(f"{workers} worker{'s' if workers != 1 else ''} x --gpus-per-worker {per_worker} need "
                         f"{need} devices, but only {len(devices)} are available ({devices.source}): {fit}")
    return sets


def worker_env(devices: Devices, dset: Sequence[str]) -> dict[str, str]:
    """The environment variables that pin a worker to ``dset``, with NVLink multicast kept off
    (harness.multicast): the worker's GPUs may be one share of a host's."""
    value = ",".join(dset)
    return {**{var: value for var in devices.variables}, **MULTICAST_OFF}


class SetPool:
    """Hands device sets to workers as they start; a worker that goes down gives its set back, so
    the replacement xdist starts for a crashed worker gets it (and never a GPU another worker has)."""

    def __init__(self, sets: Sequence[tuple[str, ...]]):
        self._sets = list(sets)
        self._owner: dict[int, str] = {}

    def take(self, worker: str) -> tuple[str, ...]:
        for i, dset in enumerate(self._sets):
            if i not in self._owner:
                self._owner[i] = worker
                return dset
        raise InputError(f"no free device set for worker {worker}: all {len(self._sets)} are in use")

    def give_back(self, worker: str) -> None:
        for i, owner in list(self._owner.items()):
            if owner == worker:
                del self._owner[i]
