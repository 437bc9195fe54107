"""Device-memory probes behind one interface (`harness.device.Probe`): NVML, amdsmi, torch, host
memory (psutil). The modelled device's (harness/devicemodel/probe.py) and the simulated one's
(harness/backends/sim.py) implement the same contract above this layer; `harness.backends.PROBES`
names them all.

Imported by the worker, so only the standard library at module level; each probe imports its
library when it is chosen.
"""

from __future__ import annotations

import os
import re
from typing import Callable, Sequence

from harness.device import Probe

VISIBLE_ENV = ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES")


def visible_devices(env: dict[str, str] | None = None) -> list[str] | None:
    """The outermost visible-device list, as strings (ids or UUIDs); None when unrestricted."""
    env = os.environ if env is None else env
    for var in VISIBLE_ENV:
        value = env.get(var)
        if value is not None and value.strip() != "":
            return [v.strip() for v in value.split(",") if v.strip()]
    return None


def physical_ids(devices: Sequence[int], env: dict[str, str] | None = None) -> list[str]:
    """Map logical indices (what torch and vLLM see) to the physical ids NVML/amdsmi use."""
    visible = visible_devices(env)
    if visible is None:
        return [str(d) for d in devices]
    try:
        return [visible[d] for d in devices]
    except IndexError:
        raise ValueError(f"device {max(devices)} is not among the visible devices {','.join(visible)}") from None


class NvmlProbe:
    name = "nvml"

    def __init__(self) -> None:
        import pynvml  # nvidia-ml-py

        pynvml.nvmlInit()
        self._nvml = pynvml

    def _handle(self, device: int):
        pid = physical_ids([device])[0]
        if pid.isdigit():
            return self._nvml.nvmlDeviceGetHandleByIndex(int(pid))
        return self._nvml.nvmlDeviceGetHandleByUUID(pid)

    def read(self, devices):
        out = []
        for d in devices:
            info = self._nvml.nvmlDeviceGetMemoryInfo(self._handle(d))
            out.append((int(info.used), int(info.total)))
        return out

    def device_count(self) -> int:  # every GPU of the node, whatever *_VISIBLE_DEVICES says
        return int(self._nvml.nvmlDeviceGetCount())

    def device_name(self, device):
        name = self._nvml.nvmlDeviceGetName(self._handle(device))
        return name.decode() if isinstance(name, bytes) else str(name)


class AmdSmiProbe:
    name = "amdsmi"

    def __init__(self) -> None:
        import amdsmi

        amdsmi.amdsmi_init()
        self._smi = amdsmi
        self._handles = amdsmi.amdsmi_get_processor_handles()

    def _handle(self, device: int):
        return self._handles[int(physical_ids([device])[0])]

    def read(self, devices):
        out = []
        for d in devices:
            usage = self._smi.amdsmi_get_gpu_vram_usage(self._handle(d))  # MiB
            out.append((int(usage["vram_used"]) << 20, int(usage["vram_total"]) << 20))
        return out

    def device_count(self) -> int:
        return len(self._handles)

    def device_name(self, device):
        info = self._smi.amdsmi_get_gpu_asic_info(self._handle(device))
        return str(info.get("market_name", "AMD GPU"))


class TorchProbe:
    """torch.cuda.mem_get_info: works on CUDA and ROCm, but creates a context in this process."""

    name = "torch"

    def __init__(self) -> None:
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("torch sees no GPU")
        self._torch = torch

    def read(self, devices):
        out = []
        for d in devices:
            free, total = self._torch.cuda.mem_get_info(d)
            out.append((int(total - free), int(total)))
        return out

    def device_name(self, device):
        return self._torch.cuda.get_device_name(device)


class HostProbe:
    """On CPU the "device" is host memory, against the machine's total. With one device: resident
    memory of this process and its children (vLLM's EngineCore and workers). With several (a
    tensor-parallel engine on vLLM-CPU), device i is what rank i holds: the resident memory of the
    process vLLM titles ``VLLM::Worker_TP<i>``, 0 when it has none (the rank exited or never
    started); memory of this process is no rank's and is not counted then."""

    name = "host"

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self._me = psutil.Process()

    def read(self, devices):
        total = self._psutil.virtual_memory().total
        if len(devices) > 1:
            ranks = self._rank_rss()
            return [(ranks.get(d, 0), total) for d in devices]
        used = sum(rss for _, rss in self._tree())
        return [(used, total) for _ in devices] or [(used, total)]

    def _tree(self) -> list[tuple[str, int]]:
        out = []
        for proc in [self._me, *self._me.children(recursive=True)]:
            try:
                out.append((proc.name(), proc.memory_info().rss))
            except (self._psutil.NoSuchProcess, self._psutil.AccessDenied):
                pass
        return out

    def _rank_rss(self) -> dict[int, int]:
        ranks: dict[int, int] = {}
        for name, rss in self._tree():
            m = re.search(r"Worker(?:_PP\d+)?_TP(\d+)", name)
            if m:  # with pipeline parallelism every stage has a TP<i>: summed, as on one device
                ranks[int(m.group(1))] = ranks.get(int(m.group(1)), 0) + rss
        return ranks

    def device_name(self, device):
        import platform

        return f"CPU ({platform.processor() or platform.machine()})"


def _first_working(*factories):
    errors = []
    for factory in factories:
        try:
            return factory()
        except Exception as e:  # a missing library or driver: try the next probe
            errors.append(f"{factory.__name__}: {e}")
    raise RuntimeError("no memory probe works here: " + "; ".join(errors))


def for_platform(platform: str, preferred: str | None = None,
                 by_name: dict[str, Callable[[], Probe]] | None = None) -> Probe:
    """Pick a probe: the preferred one if given (looked up in ``by_name``, default `PROBES`), else by
    platform (NVML/amdsmi first, torch as fallback)."""
    if preferred:
        return (PROBES if by_name is None else by_name)[preferred]()
    if platform == "cuda":
        return _first_working(NvmlProbe, TorchProbe)
    if platform == "rocm":
        return _first_working(AmdSmiProbe, TorchProbe)
    return HostProbe()


#: the real devices' probes by name (a worker plan's ``probe``)
PROBES: dict[str, Callable[[], Probe]] = {"nvml": NvmlProbe, "amdsmi": AmdSmiProbe, "torch": TorchProbe,
                                          "host": HostProbe}
