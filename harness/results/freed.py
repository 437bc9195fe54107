"""Leak or slow reclaim: was the engine still referenced, or freed and not yet given back?

The worker follows every engine object's life (worker/engines.py) and records when it was freed
(JUnit `engine_freed_at`: epoch seconds, empty when it still lived at the end of the worker). Memory
still held at a moment is then one of two things, and the fixes differ:

- `still referenced`: the engine object existed at that moment: a leak in the test (or a fixture,
  a global, a reference cycle) that no wait can end;
- `freed, not yet released by the device (N s after the free)`: the object was gone N seconds
  before; the device (ROCm's lazy reclaim, the modelled device's release delay) still counted it.
"""

from __future__ import annotations

from typing import Any

STILL_REFERENCED = "still referenced"


def status(freed_at: float | None, at: float | None) -> str:
    """What held memory at epoch ``at`` was, given when its engine was freed (None: never)."""
    if freed_at is None or at is None or freed_at > at:
        return STILL_REFERENCED
    return f"freed, not yet released by the device ({at - freed_at:.1f} s after the free)"


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def from_properties(props: dict[str, str], at: float | None) -> str | None:
    """The status at ``at`` of a case's engine, from its JUnit properties; None when the file does
    not say (a foreign JUnit, a worker that never finished the step)."""
    if "engine_freed_at" not in props:
        return None
    return status(_number(props["engine_freed_at"]), at)


def time_of(props: dict[str, str], key: str) -> float | None:
    return _number(props.get(key))
