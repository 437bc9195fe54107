"""The modelled device's settings (a variant's `inject: {device_model: {...}}`), with presets.

Standard library only: the schema in the parent, the probe in the worker and the plugin in every
process vLLM starts share this one definition. The runner hands the settings to the worker's
environment as JSON in HARNESS_DEVICE_MODEL, together with the run's ledger file; every process
the worker starts (vLLM's EngineCore child too) inherits it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields, replace

__all__ = ["DeviceModel", "ENV", "KEYS", "PLUGIN_NAME", "PRESETS", "asdict", "for_platform", "from_env",
           "replace", "to_env"]
from typing import Any

ENV = "HARNESS_DEVICE_MODEL"
PLUGIN_NAME = "teardown_harness_device_model"  # the entry point's name in pyproject.toml


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


KEYS = tuple(f.name for f in fields(DeviceModel))

#: the device a rehearsal models, by the scenario's platform
PRESETS: dict[str, DeviceModel] = {
    "rocm": DeviceModel(),
    # CUDA gives memory back at once; 79.18 GiB is an H100 80GB as vLLM counts it
    "cuda": DeviceModel(total_gib=79.18, release_delay_s=0.0, baseline_gib=0.5,
                        device_name="NVIDIA H100 80GB HBM3"),
}


def for_platform(platform: str, overrides: dict[str, Any] | None = None) -> DeviceModel:
    return replace(PRESETS.get(platform, PRESETS["rocm"]), **(overrides or {}))


def to_env(model: DeviceModel, ledger: str | os.PathLike) -> str:
    return json.dumps({"ledger": str(ledger), **asdict(model)})


def from_env(env: dict[str, str] | None = None) -> tuple[DeviceModel, str] | None:
    """(settings, ledger path) when this process runs under the device model; else None."""
    raw = (os.environ if env is None else env).get(ENV)
    if not raw:
        return None
    data = json.loads(raw)
    ledger = data.pop("ledger")
    return DeviceModel(**{k: v for k, v in data.items() if k in KEYS}), ledger
