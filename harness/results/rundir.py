"""A run directory, read once: run.json, each ``<variant>.xml`` (one parse each) and the workers' events.

Everything after this (the verdict, summary.json, report.md, report.html, the history) works on the
`RunResults` built here and reads no file again.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import events as vocab
from harness import RUN_VERSION, boundedread
from harness.device import DEFAULT_GPU_MEMORY_UTILIZATION
from harness.errors import InputError
from harness.results import junitread
from harness.results.events import read_events
from harness.results.junitread import Case

MAX_JSON_BYTES = 64 << 20  # run.json, summary.json: a few KB each
_COMMIT_IN_VERSION = re.compile(r"[+.]g([0-9a-f]{7,40})\b")


@dataclass(frozen=True)
class Versions:
    """What a variant ran on: its vLLM, torch and Python versions, platform and device, as its JUnit
    suite and its worker's own report say (not to be confused with an engine build, one
    ``vllm.LLM`` construction)."""

    vllm_version: str = ""
    vllm_commit: str = ""
    torch_version: str = ""
    platform: str = ""
    device_name: str = ""
    python: str = ""
    harness_version: str = ""
    checkout_ref: str = ""  # a pytest suite's checkout: the commit it was at


@dataclass(frozen=True)
class VariantResults:
    name: str
    cases: list[Case]  # file order; each with its properties and log tail
    properties: dict[str, str]  # the suite's properties
    versions: Versions


@dataclass(frozen=True)
class RunResults:
    run_dir: Path
    run: dict[str, Any]  # run.json, checked
    variants: dict[str, VariantResults]  # only variants that have a JUnit file, in run.json's order
    missing: list[str]  # variants of an incomplete run without a JUnit file
    events: list[dict[str, Any]] = field(default_factory=list, repr=False)  # every well-formed event
    #: variant -> repeat -> step index -> gpu_memory_utilization, from the worker plans
    utilizations: dict[str, dict[int, dict[int, float]]] = field(default_factory=dict, repr=False)

    @property
    def cases(self) -> dict[str, list[Case]]:
        return {v: r.cases for v, r in self.variants.items()}


def read(run_dir: Path) -> RunResults:
    """A run directory, every file parsed once: run.json (checked), each variant's JUnit file, the
    events and the worker plans' utilisations. A variant of an incomplete run may lack its file."""
    run_dir = Path(run_dir)
    run = read_run_json(run_dir)
    variants: dict[str, VariantResults] = {}
    missing = []
    files: dict[str, junitread.JUnitFile] = {}
    for v in run["variants"]:
        path = run_dir / f"{v}.xml"
        if path.is_file():
            files[v] = junitread.read(path)
        elif run.get("incomplete"):
            missing.append(v)
        else:
            raise InputError(f"{path}: missing JUnit file for variant {v!r}")
    if not files and not run.get("incomplete"):  # an interrupted run may end before any worker wrote one
        raise InputError(f"{run_dir} is not a run directory: no JUnit file for any of {', '.join(run['variants'])}")
    events = run_events(run_dir)
    info = worker_info(events)
    for v, f in files.items():
        variants[v] = VariantResults(v, f.cases, f.properties, _versions(f.properties, info.get(v, {})))
    return RunResults(run_dir, run, variants, missing, events,
                      {v: plan_utilizations(run_dir, v) for v in run["variants"]})


def plan_utilizations(run_dir: Path, variant: str) -> dict[int, dict[int, float]]:
    """repeat -> step index -> gpu_memory_utilization, from the variant's worker plans."""
    out: dict[int, dict[int, float]] = {}
    for path in (run_dir / "logs").glob(f"{variant}-r*.plan.json"):
        m = re.fullmatch(re.escape(variant) + r"-r(\d+)\.plan\.json", path.name)
        if not m:
            continue
        try:
            plan = json.loads(path.read_text(encoding="utf-8"))
            out[int(m.group(1))] = {
                int(s["index"]): float(s.get("engine", {}).get("gpu_memory_utilization") or DEFAULT_GPU_MEMORY_UTILIZATION)
                for s in plan.get("steps", [])}
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            continue
    return out


def read_run_json(run_dir: Path) -> dict[str, Any]:
    """run.json of a run directory, checked: its version and the keys the readers rely on."""
    path = run_dir / "run.json"
    if not path.is_file():
        raise InputError(f"{run_dir} is not a run directory: no run.json")
    run = read_json(path)
    if not isinstance(run, dict):
        raise InputError(f"{path}: expected a JSON object")
    if run.get("version") != RUN_VERSION:
        raise InputError(f"{path}: version: unsupported {run.get('version')!r}, this release reads {RUN_VERSION}")
    variants = run.get("variants")
    if not isinstance(variants, list) or not all(isinstance(v, str) and v for v in variants):
        raise InputError(f"{path}: variants: expected a list of variant names")
    for v in variants:
        if Path(v).name != v or v.startswith("."):  # it becomes a file name in the run directory
            raise InputError(f"{path}: variants: {v!r} is not a usable variant name")
    if not isinstance(run.get("baseline"), str):
        raise InputError(f"{path}: baseline: expected a variant name")
    repeat = run.get("repeat", 1)
    if not isinstance(repeat, int) or isinstance(repeat, bool) or repeat < 1:
        raise InputError(f"{path}: repeat: expected a whole number >= 1, got {repeat!r}")
    run["repeat"] = repeat
    run["incomplete"] = bool(run.get("incomplete", False))
    return run


def read_json(path: Path) -> Any:
    """A JSON file of the run directory; a file that cannot be read or is not JSON is one line."""
    data = boundedread.read(path, MAX_JSON_BYTES, lambda msg: InputError(f"{path}: {msg}"), "a JSON file")
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: cannot read: {e}") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not JSON: {e}") from None


def run_events(run_dir: Path) -> list[dict[str, Any]]:
    """The run's events: events.jsonl, or the per-worker files when the runner never merged them
    (an interrupted run)."""
    events = read_events(run_dir / "events.jsonl")
    if not events:
        for part in sorted((run_dir / "logs").glob("*.events.jsonl")):
            events += read_events(part)
    return events


def worker_info(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """variant -> the worker's own report (vLLM version and commit), from its first worker_start."""
    out: dict[str, dict[str, Any]] = {}
    for ev in events:
        if ev.get("event") == vocab.WORKER_START:
            info = ev.get("info")
            out.setdefault(str(ev.get("variant")), info if isinstance(info, dict) else {})
    return out


def commit_of(version: str) -> str:
    """A commit in a version's local part (``0.22.0+g1a2b3c4``, ``0.11.1.dev5+gabc1234.rocm``)."""
    m = _COMMIT_IN_VERSION.search(version or "")
    return m.group(1) if m else ""


def _versions(props: dict[str, str], info: dict[str, Any]) -> Versions:
    version = props.get("vllm_version") or str(info.get("vllm_version") or "")
    return Versions(
        vllm_version=version,
        vllm_commit=str(info.get("vllm_commit") or props.get("vllm_commit") or commit_of(version)),
        torch_version=props.get("torch_version", ""), platform=props.get("platform", ""),
        device_name=props.get("device_name", ""), python=props.get("python", ""),
        harness_version=props.get("harness_version", ""), checkout_ref=str(info.get("checkout_ref") or ""))
