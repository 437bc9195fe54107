"""Leaks before they fail: memory a test left behind, whether or not a later construction failed.

A test's residue is the memory after its teardown (its last reading) minus the memory before its
first construction, per device. The worker's step results give it (`properties`, written into the
JUnit file as `residue_bytes`, `residue_at` and `residue_bytes_dev<i>`); `from_cases` lists every
residue above the tolerance the culprit uses, largest first, for summary.json's ★ `leaks`:
`{test, variant, device, residue_bytes}`, with `status` (results/freed.py) when the worker followed
the engine's life.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

from harness.device import GIB
from harness.model import StepResult
from harness.results import culprit, freed

_DEV = re.compile(r"^residue_bytes_dev(\d+)$")


def properties(res: StepResult) -> dict[str, str]:
    """A step's residue and the moments the leak and culprit statuses are judged at. Its residue is
    judged at its end: readings of its engines taken later (a module-scoped fixture's teardown in a
    later test) are not its own test's."""
    props: dict[str, str] = {}
    own = [m for m in res.memory if res.ended_at is None or m.t <= res.ended_at]
    if res.engine_followed and any(m.label == "after_construct" for m in res.memory):
        props["engine_freed_at"] = "" if res.engine_freed_at is None else f"{res.engine_freed_at:.6f}"
    at = res.construct_at()
    if at is not None:
        props["construct_at"] = f"{at:.6f}"
    start = next((m for m in res.memory if m.label == "before_construct"), None)
    if start is None or not any(m.label == "after_construct" for m in own):
        return props
    end = own[-1]
    props["residue_bytes"] = str(max(0, end.used_bytes - start.used_bytes))
    props["residue_at"] = f"{end.t:.6f}"
    if len(start.per_device) > 1 and len(end.per_device) == len(start.per_device):
        for i, (a, b) in enumerate(zip(start.per_device, end.per_device)):
            props[f"residue_bytes_dev{i}"] = str(max(0, b - a))
    return props


def _built_bytes(props: dict[str, str]) -> int:
    before = props.get("mem_before_construct_bytes")
    after = props.get("mem_after_construct_bytes")
    try:
        return max(0, int(float(after)) - int(float(before)))
    except (TypeError, ValueError):
        return 0


def _int(value: Any) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def of_case(props: dict[str, str]) -> list[tuple[str, int]]:
    """(device, residue bytes) of one case: per device with several, else device "0"; a foreign
    JUnit's from its memory readings (culprit.residue)."""
    per_device = sorted(((int(m.group(1)), _int(v)) for k, v in props.items() if (m := _DEV.match(k))),
                        key=lambda d: d[0])
    if per_device:
        return [(str(i), b) for i, b in per_device if b is not None]
    total = _int(props["residue_bytes"]) if "residue_bytes" in props else culprit.residue(props)
    return [] if total is None else [("0", total)]


def from_cases(cases: Iterable[tuple[str, Any]]) -> list[dict[str, Any]]:
    """Every residue above the tolerance, largest first; ``cases``: (variant, junitread.Case)."""
    out = []
    for variant, case in cases:
        props = case.properties
        tolerance = culprit.tolerance(_built_bytes(props))
        status = freed.from_properties(props, freed.time_of(props, "residue_at"))
        for device, residue in of_case(props):
            if residue > tolerance:
                leak = {"test": case.name, "variant": variant, "device": device, "residue_bytes": residue}
                if case.classname:
                    leak["classname"] = case.classname
                if status is not None:
                    leak["status"] = status
                out.append(leak)
    return sorted(out, key=lambda leak: -leak["residue_bytes"])


def describe(leak: dict[str, Any]) -> str:
    """One line: "with_fix / test_greedy: 19.20 GiB left on device 0 (still referenced)"."""
    status = f" ({leak['status']})" if leak.get("status") else ""
    return (f"{leak['variant']} / {leak['test']}: {leak['residue_bytes'] / GIB:.2f} GiB left on device "
            f"{leak['device']}{status}")
