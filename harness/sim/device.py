"""The simulated device's settings (a scenario's `sim:` section, scenario/specs.py) as the ledger and
the backend in the worker take them: a plain dict, with an MI250 GCD's defaults."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from harness.scenario.specs import SimDevice

DEFAULTS: dict[str, Any] = asdict(SimDevice())
