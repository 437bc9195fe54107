"""Device-memory probes behind one interface (`harness.device.Probe`): NVML, amdsmi, HIP's/CUDA's
mem_get_info (through a helper process), host memory (psutil); unit checks, and two probes side by side. The modelled device's (harness/devicemodel/probe.py) and the simulated one's
(harness/backends/sim.py) implement the same contract above this layer; `harness.backends.PROBES`
names them all.

Imported by the worker, so only the standard library at module level; each probe imports its
library when it is chosen.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable, Sequence

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
            out.append(checked(self.name, int(info.used), int(info.total)))
        return out

    def device_count(self) -> int:  # every GPU of the node, whatever *_VISIBLE_DEVICES says
        return int(self._nvml.nvmlDeviceGetCount())

    def device_name(self, device):
        name = self._nvml.nvmlDeviceGetName(self._handle(device))
        return name.decode() if isinstance(name, bytes) else str(name)


class ProbeUnitError(RuntimeError):
    """A reading that cannot be a device's memory in bytes (MiB taken for bytes, or the reverse)."""


def checked(name: str, used: int, total: int) -> tuple[int, int]:
    """(used, total) in bytes, if they can be: a device of 1 GiB to 64 TiB, used within it. A wait
    in ROCm's fork once compared MiB with bytes and "released" at once; a probe must not."""
    if not (1 << 30) <= total <= (64 << 40) or not 0 <= used <= total:
        raise ProbeUnitError(f"{name}: used {used}, total {total}: not a device's memory in bytes "
                             "(a unit mix-up, MiB for bytes?)")
    return used, total


class AmdSmiProbe:
    """amdsmi: bytes from amdsmi_get_gpu_memory_usage/_total where this amdsmi has them, else
    amdsmi_get_gpu_vram_usage's MiB; either way unit-checked. On a DPX/CPX partition amdsmi can
    report the whole card, and its used VRAM lags on some parts (MI355X), so it is second to HIP."""

    name = "amdsmi"

    def __init__(self) -> None:
        import amdsmi

        amdsmi.amdsmi_init()
        self._smi = amdsmi
        self._handles = amdsmi.amdsmi_get_processor_handles()

    def _handle(self, device: int):
        return self._handles[int(physical_ids([device])[0])]

    def read(self, devices):
        return [checked(self.name, *self._bytes(self._handle(d))) for d in devices]

    def _bytes(self, handle) -> tuple[int, int]:
        smi = self._smi
        vram = getattr(getattr(smi, "AmdSmiMemoryType", None), "VRAM", None)
        if vram is not None and hasattr(smi, "amdsmi_get_gpu_memory_usage"):
            return (int(smi.amdsmi_get_gpu_memory_usage(handle, vram)),
                    int(smi.amdsmi_get_gpu_memory_total(handle, vram)))
        usage = smi.amdsmi_get_gpu_vram_usage(handle)  # MiB
        return int(usage["vram_used"]) << 20, int(usage["vram_total"]) << 20

    def device_count(self) -> int:
        return len(self._handles)

    def device_name(self, device):
        info = self._smi.amdsmi_get_gpu_asic_info(self._handle(device))
        return str(info.get("market_name", "AMD GPU"))


# The helper of MemGetInfoProbe: torch.cuda.mem_get_info is HIP's hipMemGetInfo on ROCm and
# cudaMemGetInfo on CUDA. One JSON request per line on stdin, one answer per line on stdout.
_HELPER = r"""
import json, sys
import torch
if not torch.cuda.is_available():
    raise SystemExit("torch sees no GPU")
for line in sys.stdin:
    ask = json.loads(line)
    try:
        if ask["op"] == "read":
            out = [[int(t - f), int(t)] for f, t in (torch.cuda.mem_get_info(d) for d in ask["devices"])]
        else:
            out = torch.cuda.get_device_name(ask["device"])
        print(json.dumps({"ok": out}), flush=True)
    except Exception as e:
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)
"""


class MemGetInfoProbe:
    """torch.cuda.mem_get_info (HIP's or CUDA's mem_get_info), asked of a helper process: the device
    context it needs is the helper's, so the worker, whose engines are measured, gets none (the
    helper's context is itself device memory, counted as used, as a test process's is upstream).
    The helper sees the worker's *_VISIBLE_DEVICES, so device indices are the worker's; it ends when
    the worker closes its stdin (or with the worker's process group)."""

    def __init__(self, name: str = "torch", argv: Sequence[str] | None = None) -> None:
        import subprocess
        import sys

        self.name = name
        self._proc = subprocess.Popen(list(argv or [sys.executable, "-c", _HELPER]), stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._ask({"op": "read", "devices": [0]})  # fails here, not mid-run, where there is no GPU

    def _ask(self, request: dict):
        import json

        try:
            self._proc.stdin.write(json.dumps(request) + "\n")
            self._proc.stdin.flush()
            line = self._proc.stdout.readline()
        except OSError:
            line = ""
        if not line:
            self._proc.wait(timeout=30)
            why = (self._proc.stderr.read() or "").strip().splitlines()
            raise RuntimeError(f"{self.name} helper: {why[-1] if why else 'no answer'}")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"{self.name} helper: {answer['error']}")
        return answer["ok"]

    def read(self, devices):
        return [checked(self.name, u, t) for u, t in self._ask({"op": "read", "devices": list(devices)})]

    def device_name(self, device):
        return str(self._ask({"op": "name", "device": device}))


class DualProbe:
    """Two probes of one device: the first answers (and waits act on its figures), the second is
    recorded beside it, so a reading that one of them gets wrong shows as a disagreement."""

    def __init__(self, first: Probe, second: Probe) -> None:
        self.first, self.second = first, second
        self.name = first.name

    def read(self, devices):
        return self.first.read(devices)

    def device_name(self, device):
        return self.first.device_name(device)


DISAGREEMENT_BYTES = 1 << 30  # two probes further apart than this: said in JUnit and the report


def beside(probe: Probe, devices: Sequence[int], readings: list[tuple[int, int]]) -> dict[str, Any]:
    """The second probe's reading for a memory event: its name, its figure, and how far it is from
    the first's (the largest gap over the devices) when that is over DISAGREEMENT_BYTES."""
    second = getattr(probe, "second", None)
    if second is None:
        return {}
    try:
        other = second.read(devices)
    except Exception as e:  # noqa: BLE001 - a second opinion that fails must not fail the step
        return {"second_probe": second.name, "second_error": f"{type(e).__name__}: {e}"}
    gap = max(abs(a - b) for (a, _), (b, _) in zip(readings, other))
    fields: dict[str, Any] = {"second_probe": second.name, "second_used_bytes": sum(u for u, _ in other)}
    if gap > DISAGREEMENT_BYTES:
        fields["probe_disagreement_bytes"] = gap
    return fields


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


def _hip() -> Probe:
    return MemGetInfoProbe("hip")


def _torch() -> Probe:
    return MemGetInfoProbe("torch")


def _working(*factories) -> list[Probe]:
    found, errors = [], []
    for factory in factories:
        try:
            found.append(factory())
        except Exception as e:  # a missing library or driver: try the next probe
            errors.append(f"{factory.__name__.lstrip('_')}: {e}")
    if not found:
        raise RuntimeError("no memory probe works here: " + "; ".join(errors))
    return found


def for_platform(platform: str, preferred: str | None = None,
                 by_name: dict[str, Callable[[], Probe]] | None = None) -> Probe:
    """Pick a probe: the preferred one if given (looked up in ``by_name``, default `PROBES`), else by
    platform, the first that works answering and the second, where it works too, recorded beside
    it: on ROCm HIP's mem_get_info (what upstream's waits read since #57450), then amdsmi; on CUDA
    NVML, then torch's mem_get_info."""
    if preferred:
        return (PROBES if by_name is None else by_name)[preferred]()
    pair = {"cuda": (NvmlProbe, _torch), "rocm": (_hip, AmdSmiProbe)}.get(platform)
    if pair is None:
        return HostProbe()
    found = _working(*pair)
    return DualProbe(*found) if len(found) == 2 else found[0]


#: the real devices' probes by name (a worker plan's ``probe``)
PROBES: dict[str, Callable[[], Probe]] = {"nvml": NvmlProbe, "amdsmi": AmdSmiProbe, "torch": _torch, "hip": _hip,
                                          "host": HostProbe}
