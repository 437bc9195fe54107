"""The modelled device's settings in a run: presets per platform, and how they travel.

The keys and presets themselves are data of the scenario (scenario/specs.py: `DeviceModel`), so the
schema checks them without this stage. Standard library only. The runner hands the settings to the worker's
environment as JSON in HARNESS_DEVICE_MODEL, together with the run's ledger file; every process
the worker starts (vLLM's EngineCore child too) inherits it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, replace
from typing import Any

from harness.scenario.specs import DEVICE_MODEL_KEYS as KEYS
from harness.scenario.specs import DEVICE_MODEL_PRESETS as PRESETS
from harness.scenario.specs import DeviceModel

__all__ = ["DeviceModel", "ENV", "KEYS", "PLUGIN_NAME", "PRESETS", "asdict", "for_platform", "from_env",
           "replace", "to_env"]

ENV = "HARNESS_DEVICE_MODEL"
PLUGIN_NAME = "teardown_harness_device_model"  # the entry point's name in pyproject.toml


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
