"""summary.json: the verdict of a run directory, rebuilt from run.json and the JUnit files alone.

Everything here is derived from files, so ``run.py report RUN_DIR`` gives the same answer on another
machine, or after the JUnit files were downloaded from CI.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from harness import RESULT_VERSION, atomic, boundedread
from harness.errors import InfrastructureError, InputError
from harness.results.diff import DiffResult, to_json
from harness.results.junitread import Case, read_cases
from harness.results.verdict import ALPHA, StepCell, VerdictReport, evaluate

# run.json keys copied into the summary as they are
_PASSTHROUGH = ("scenario", "scenario_path", "run_id", "started", "finished", "backend", "platform")


def build(run_dir: Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    run = _run_json(run_dir)
    variants, baseline, repeats = run["variants"], run["baseline"], run["repeat"]
    incomplete = bool(run.get("incomplete", False))

    cases: dict[str, list[Case]] = {}
    missing = []
    for v in variants:
        path = run_dir / f"{v}.xml"
        if path.is_file():
            cases[v] = read_cases(path)
        elif incomplete:
            missing.append(v)
        else:
            raise InputError(f"{path}: missing JUnit file for variant {v!r}")
    if not cases:
        raise InputError(f"{run_dir} is not a run directory: no JUnit file for any of {', '.join(variants)}")

    report = evaluate(cases, baseline, repeats, incomplete)
    reasons = [f"variant {v!r} has no results (no {v}.xml)" for v in missing] + report.reasons
    return {
        "version": RESULT_VERSION,
        **{k: run.get(k) for k in _PASSTHROUGH},
        "baseline": baseline,
        "variants": variants,
        "repeat": repeats,
        "incomplete": incomplete,
        "verdict": report.verdict.value,
        "exit_code": report.exit_code,
        "reasons": reasons,
        "candidates": {name: {"verdict": c.verdict.value, "exit_code": c.verdict.exit_code,
                              "reasons": c.reasons, "vram_failures": c.vram_failures,
                              "regressions": c.regressions, "fisher_p": c.fisher_p}
                       for name, c in report.candidates.items()},
        "missing": missing,
        "counts": report.counts,
        "cases": [{"classname": row.key[0], "step": row.step,
                   "variants": {v: _cell(cell) for v, cell in row.cells.items()}} for row in report.steps],
        "stats": _stats(report),
        "transitions": {name: _transitions(c.diff) for name, c in report.candidates.items()},
        "substitutions": list(run.get("substitutions") or []),
        "orphans": list(run.get("orphans") or []),
    }


def write(run_dir: Path, history: bool = True) -> dict[str, Any]:
    """Build the summary, then write summary.json, report.md and report.html (each appears whole or
    not at all) and append the run to the results directory's history.jsonl.

    The verdict never depends on the picture: if report.html or the history cannot be written, a
    warning says so and the summary is still returned."""
    from harness.report import markdown

    run_dir = Path(run_dir)
    summary = build(run_dir)
    try:
        atomic.write_json(run_dir / "summary.json", summary)
        atomic.write_text(run_dir / "report.md", markdown.render(summary))
    except OSError as e:
        raise InfrastructureError(f"{run_dir}: cannot write the report: {e.strerror or e}") from None
    _extras(summary, run_dir, history)
    return summary


def _extras(summary: dict[str, Any], run_dir: Path, history: bool) -> None:
    from harness.ci import history as history_mod
    from harness.report import html

    try:
        atomic.write_text(run_dir / "report.html", html.render(summary, run_dir))
    except Exception as e:  # noqa: BLE001 - a broken picture must not cost the verdict
        print(f"warning: {run_dir / 'report.html'} not written: {type(e).__name__}: {e}", file=sys.stderr)
    if history:
        try:
            history_mod.append_run(summary, run_dir)
        except Exception as e:  # noqa: BLE001
            print(f"warning: history not appended: {type(e).__name__}: {e}", file=sys.stderr)


def _run_json(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "run.json"
    if not path.is_file():
        raise InputError(f"{run_dir} is not a run directory: no run.json")
    data = boundedread.read(path, 64 << 20, lambda msg: InputError(f"{path}: {msg}"), "a run.json file")
    try:
        run = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: cannot read: {e}") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not JSON: {e}") from None
    if not isinstance(run, dict):
        raise InputError(f"{path}: expected a JSON object")
    if run.get("version") != 1:
        raise InputError(f"{path}: version: unsupported {run.get('version')!r}, this release reads 1")
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
    return run


def _cell(cell: StepCell) -> dict[str, Any]:
    c = cell.case
    return {"outcome": c.outcome.value, "failure_class": c.failure_class.value, "message": c.message,
            "time": round(c.time, 6), "runs": cell.runs, "failed": cell.failed, "vram": cell.vram.to_dict()}


def _stats(report: VerdictReport) -> dict[str, Any]:
    base = report.pooled.get(report.baseline)
    fisher = {}
    if report.repeats > 1 and base is not None:
        for name, c in report.candidates.items():
            cand = report.pooled[name]
            fisher[name] = {"table": [[base.k, base.n - base.k], [cand.k, cand.n - cand.k]], "p": c.fisher_p}
    return {"repeats": report.repeats, "alpha": ALPHA,
            "pooled_vram": {v: r.to_dict() for v, r in report.pooled.items()}, "fisher": fisher}


def _transitions(d: DiffResult) -> dict[str, Any]:
    out = to_json(d)
    return {"counts": out["counts"],
            "cases": [{"classname": c["classname"], "step": c["name"], "transition": c["transition"],
                       "baseline": c["baseline"], "candidate": c["candidate"]} for c in out["cases"]]}
