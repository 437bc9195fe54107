"""Test data shared by several test modules."""

from __future__ import annotations

from typing import Any

from harness import RESULT_VERSION
from harness.results.summary import RunSummary

_CELL = {"outcome": "passed", "failure_class": "none", "message": "", "time": 0.0, "runs": 1, "failed": 0,
         "vram": {"k": 0, "n": 1, "low": 0.0, "high": 1.0}}
_SIDE = {"outcome": "passed", "failure_class": "none", "message": "", "time": 0.0}


def run_summary(partial: dict[str, Any]) -> RunSummary:
    """A `RunSummary` from the parts of summary.json a test cares about; every other field (and
    every field of a cell or a transition it gives in part) has a neutral value."""
    d = {"version": RESULT_VERSION, "baseline": "", "variants": [], "repeat": 1, "incomplete": False,
         "verdict": "", "exit_code": 0, "reasons": [], "candidates": {}, "missing": [], "counts": {},
         "cases": [], "stats": {"repeats": 1, "alpha": 0.05, "pooled_vram": {}, "fisher": {}},
         "transitions": {}, **partial}
    d["cases"] = [{"classname": "", **row, "variants": {v: {**_CELL, **c} for v, c in row["variants"].items()}}
                  for row in d["cases"]]
    d["transitions"] = {name: {"counts": t.get("counts", {}), "cases": [
        {"classname": "", **c, "baseline": c.get("baseline") and {**_SIDE, **c["baseline"]},
         "candidate": c.get("candidate") and {**_SIDE, **c["candidate"]}} for c in t["cases"]]}
        for name, t in d["transitions"].items()}
    return RunSummary.from_json(d)
