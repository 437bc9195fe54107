"""results/history.jsonl: one line per variant per run, and the nightly `trend` built from it.

Each finished run appends one JSON object per variant (see `record`): scenario, variant, date, vLLM
version and commit, the run's verdict, failure counts by class, release latencies, and every step's
outcome, so a step that starts failing can be found later without the run directories.

Appending is one ``write`` of one line on a file opened with ``O_APPEND``: runs finishing at the same
time never interleave their lines. Reading skips a corrupt line (a disk that filled up mid-line, a
hand edit) with a warning instead of failing. ``HARNESS_HISTORY`` overrides the file's location
(CI agents keep it on a persistent volume).

`trend` groups the records by night (the UTC date a run started) and computes, for the last N nights
that have runs, each variant's pass rate and median release latency. A step is flagged as newly
flaky when it passed in every earlier night of the window and failed in at least one of the most
recent nights. The records are rendered from a run's `RunSummary`; the trend is shown by
report/trend.py, and harness/pipeline.py appends a finished run's records. This module keeps the
store and the model only.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from harness import RESULT_VERSION, boundedread
from harness.errors import InputError
from harness.results import rundir
from harness.results.summary import RunSummary
from harness.results.verdict import step_of

FILE_NAME = "history.jsonl"
ENV = "HARNESS_HISTORY"
MAX_BYTES = 1 << 30  # years of nightly records are a few MB
REQUIRED = ("scenario", "variant", "night", "steps")


def history_path(out: Path | str) -> Path:
    """Where the history of results directory ``out`` lives (``$HARNESS_HISTORY`` wins)."""
    env = os.environ.get(ENV)
    return Path(env) if env else Path(out) / FILE_NAME


# --------------------------------------------------------------------------- writing
def record(summary: RunSummary, run_dir: Path | None = None) -> list[dict[str, Any]]:
    """One history record per variant of a run, rendered from its summary. A summary without its
    parsed results (loaded back from summary.json) has them read again from ``run_dir``."""
    results = summary.results
    if results is None:
        if run_dir is None:
            raise TypeError("history.record: a summary loaded back from summary.json needs its run directory")
        results = rundir.read(Path(run_dir))
    repeats = int(summary.repeat or 1)
    started = summary.started or results.run.get("started") or ""
    out = []
    for variant in summary.variants:
        vr = results.variants.get(variant)
        if vr is None:
            continue
        cases, props, versions = vr.cases, vr.properties, vr.versions
        steps: dict[str, dict[str, Any]] = {}
        for c in cases:
            st = steps.setdefault(step_of(c.name, repeats), {"runs": 0, "failed": 0})
            if c.outcome.value == "skipped":
                continue
            st["runs"] += 1
            if c.failed:
                st["failed"] += 1
                st.setdefault("class", c.failure_class.value)
        latencies = [v for v in (_float(c.properties.get("release_latency_s")) for c in cases) if v is not None]
        counts = summary.counts.get(variant, {})
        cand = summary.candidates.get(variant)
        out.append({
            "version": RESULT_VERSION,
            "scenario": summary.scenario,
            "variant": variant,
            "baseline": variant == summary.baseline,
            "run_id": summary.run_id,
            "date": started,
            "night": _night(started),
            "profile": (results.run.get("profiles") or {}).get(variant) or props.get("teardown_profile", ""),
            "backend": summary.backend,
            "platform": versions.platform or summary.platform,
            "device_name": versions.device_name,
            "vllm_version": versions.vllm_version,
            "vllm_commit": versions.vllm_commit,
            "checkout_ref": versions.checkout_ref,  # with the vLLM build, the code revision `trend --flaky` groups by
            "harness_version": versions.harness_version,
            "verdict": summary.verdict,
            "rehearsal": bool(summary.rehearsal),  # the machine lacked the scenario's platform
            "exit_code": summary.exit_code,
            "variant_verdict": cand.verdict if cand else None,
            "runs": sum(s["runs"] for s in steps.values()),
            "passed": counts.get("passed", 0),
            "failed": counts.get("failed", 0),
            "skipped": counts.get("skipped", 0),
            "failures": {k: n for k, n in (counts.get("classes") or {}).items() if n},
            "release_latency_s": {"median": round(statistics.median(latencies), 6) if latencies else None,
                                  "max": round(max(latencies), 6) if latencies else None, "n": len(latencies)},
            "steps": steps,
        })
    return out


def append(path: Path, records: Iterable[dict[str, Any]]) -> int:
    """Append each record as one line with one ``write`` on an ``O_APPEND`` descriptor; records of a
    (run_id, variant) already in the file are not written twice (``run.py report`` of the same
    directory again). Returns how many lines were written."""
    path = Path(path)
    records = list(records)
    if not records:
        return 0
    present = {(r.get("run_id"), r.get("variant")) for r in load(path)[0]} if path.exists() else set()
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        for rec in records:
            if (rec.get("run_id"), rec.get("variant")) in present:
                continue
            data = (json.dumps(rec, sort_keys=False, separators=(",", ":"), default=str) + "\n").encode()
            n = os.write(fd, data)
            while n < len(data):  # a regular file takes it whole; a short write still ends the line
                data = data[n:]
                n = os.write(fd, data)
            written += 1
    finally:
        os.close(fd)
    return written


def append_run(summary: RunSummary, run_dir: Path) -> Path | None:
    """After a run: append its records to the history of its results directory. Only a complete,
    unsharded run laid out as ``<out>/<scenario>/<run-id>`` is recorded (a shard's partial verdict
    would count twice once the shards are merged). Returns the history file, or None if skipped."""
    run_dir = Path(run_dir).resolve()
    if summary.incomplete or run_dir.parent.name != summary.scenario:
        return None
    results = summary.results
    run = results.run if results is not None else _read_json(run_dir / "run.json")
    shard = run.get("shard")
    if shard and str(shard) not in ("1/1", "0/1"):
        return None
    path = history_path(run_dir.parent.parent)
    append(path, record(summary, run_dir))
    return path


# --------------------------------------------------------------------------- reading
def load(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Every usable record of ``path`` in file order, and one warning per line that was skipped."""
    records, warnings = [], []
    if not os.path.lexists(path):
        return [], []
    raw = boundedread.read(path, MAX_BYTES, lambda msg: InputError(f"{path}: {msg}"), "a history file (JSON lines)")
    for lineno, line in enumerate(raw.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            warnings.append(f"{path}:{lineno}: skipped a corrupt line (not JSON)")
            continue
        if not isinstance(rec, dict) or any(k not in rec for k in REQUIRED):
            warnings.append(f"{path}:{lineno}: skipped a line that is not a history record")
            continue
        problem = record_problem(rec)
        if problem:
            warnings.append(f"{path}:{lineno}: skipped a malformed record ({problem})")
            continue
        if rec.get("version", RESULT_VERSION) > RESULT_VERSION:
            warnings.append(f"{path}:{lineno}: skipped a record of a newer version {rec.get('version')!r}")
            continue
        records.append(rec)
    return records, warnings


_TEXT, _COUNT, _NUMBER = (str,), (int,), (int, float)
# what trend reads of a record, and the types it can use (None allowed where a key is optional)
_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "version": (_COUNT, True), "scenario": (_TEXT, False), "variant": (_TEXT, False), "night": (_TEXT, False),
    "run_id": (_TEXT, True), "verdict": (_TEXT, True), "vllm_version": (_TEXT, True), "baseline": ((bool,), True),
    "rehearsal": ((bool,), True),
    "vllm_commit": (_TEXT, True), "checkout_ref": (_TEXT, True),
    "runs": (_COUNT, True), "passed": (_COUNT, True), "failed": (_COUNT, True), "skipped": (_COUNT, True),
    "steps": ((dict,), False), "release_latency_s": ((dict,), True),
}


def _kind(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in types:
        return False  # true is an int to Python, not a count to a reader
    return isinstance(value, types)


def record_problem(rec: dict[str, Any]) -> str | None:
    """Why a JSON object cannot be used as a history record (None when it can): the key that is wrong."""
    for key, (types, optional) in _FIELDS.items():
        value = rec.get(key)
        if optional and value is None:  # absent or null
            continue
        if not _kind(value, types):
            return f"{key}: expected {' or '.join(t.__name__ for t in types)}, got {type(value).__name__}"
    median = (rec.get("release_latency_s") or {}).get("median")
    if median is not None and not _kind(median, _NUMBER):
        return f"release_latency_s.median: expected a number, got {type(median).__name__}"
    for step, st in rec["steps"].items():
        if not isinstance(st, dict):
            return f"steps.{step}: expected a mapping, got {type(st).__name__}"
        for key in ("runs", "failed"):
            if key in st and not (_kind(st[key], _COUNT) and st[key] >= 0):
                return f"steps.{step}.{key}: expected a count, got {st[key]!r}"
        if st.get("class") is not None and not isinstance(st["class"], str):
            return f"steps.{step}.class: expected a string, got {type(st['class']).__name__}"
    return None


# --------------------------------------------------------------------------- trend
@dataclass
class NightCell:
    """One variant on one night, over every run of that night."""

    runs: int = 0  # step runs that ran (passed + failed)
    passed: int = 0
    skipped: int = 0  # steps that never ran (a hung or dead worker): the pass rate alone would hide them
    latencies: list[float] = field(default_factory=list)  # per-run medians
    verdicts: list[str] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)

    @property
    def pass_rate(self) -> float | None:
        return self.passed / self.runs if self.runs else None

    @property
    def latency(self) -> float | None:
        return statistics.median(self.latencies) if self.latencies else None


@dataclass
class Flaky:
    scenario: str
    variant: str
    step: str
    failed_nights: list[str]  # recent nights where it failed
    failures: int
    runs: int
    failure_class: str
    earlier_nights: int  # earlier nights in which it ran and always passed


@dataclass
class ScenarioTrend:
    scenario: str
    nights: list[str]
    variants: list[str]
    cells: dict[str, dict[str, NightCell]]  # variant -> night -> cell
    verdicts: dict[str, list[str]]  # night -> the runs' verdicts
    flaky: list[Flaky]
    baseline: str | None = None


def trend(records: list[dict[str, Any]], scenario: str | None = None, nights: int = 14,
          recent: int = 3) -> list[ScenarioTrend]:
    """Per scenario, the last ``nights`` nights that have runs; flaky steps judged over that window,
    ``recent`` last nights against the ones before."""
    if nights < 1 or recent < 1:
        raise InputError("trend: --nights and --recent must be at least 1")
    by_scenario: dict[str, list[dict]] = {}
    for rec in records:
        if scenario is None or rec["scenario"] == scenario:
            by_scenario.setdefault(str(rec["scenario"]), []).append(rec)
    out = []
    for name in sorted(by_scenario):
        recs = by_scenario[name]
        window = sorted({str(r["night"]) for r in recs})[-nights:]
        recs = [r for r in recs if str(r["night"]) in window]
        variants = list(dict.fromkeys(r["variant"] for r in sorted(recs, key=lambda r: not r.get("baseline"))))
        cells: dict[str, dict[str, NightCell]] = {v: {n: NightCell() for n in window} for v in variants}
        verdicts: dict[str, list[str]] = {n: [] for n in window}
        seen_runs: set = set()
        for r in recs:
            cell = cells[r["variant"]][str(r["night"])]
            steps = r["steps"].values()
            cell.runs += sum(int(s.get("runs", 0)) for s in steps)
            cell.passed += sum(int(s.get("runs", 0)) - int(s.get("failed", 0)) for s in steps)
            cell.skipped += int(r.get("skipped") or 0)
            lat = (r.get("release_latency_s") or {}).get("median")
            if isinstance(lat, (int, float)):
                cell.latencies.append(float(lat))
            if r.get("vllm_version") and r["vllm_version"] not in cell.versions:
                cell.versions.append(str(r["vllm_version"]))
            if (r.get("run_id"), str(r["night"])) not in seen_runs and r.get("verdict"):
                seen_runs.add((r.get("run_id"), str(r["night"])))
                # a rehearsal's verdict is not the platform's: the row says so where the verdict is
                verdicts[str(r["night"])].append(str(r["verdict"]) + (" (rehearsal)" if r.get("rehearsal") else ""))
        baseline = next((r["variant"] for r in recs if r.get("baseline")), None)
        out.append(ScenarioTrend(name, window, variants, cells, verdicts, _flaky(name, recs, window, recent),
                                 baseline))
    return out


def _flaky(scenario: str, recs: list[dict], window: list[str], recent: int) -> list[Flaky]:
    if len(window) < 2:
        return []
    recent = min(recent, len(window) - 1)  # at least one earlier night to compare with
    late = set(window[-recent:])
    # (variant, step) -> night -> [runs, failed, class]
    table: dict[tuple[str, str], dict[str, list]] = {}
    for r in recs:
        for step, s in r["steps"].items():
            if not isinstance(s, dict):
                continue
            acc = table.setdefault((r["variant"], step), {}).setdefault(str(r["night"]), [0, 0, ""])
            acc[0] += int(s.get("runs", 0))
            acc[1] += int(s.get("failed", 0))
            acc[2] = acc[2] or s.get("class", "")
    out = []
    for (variant, step), per_night in table.items():
        earlier = {n: v for n, v in per_night.items() if n not in late and v[0] > 0}
        later = {n: v for n, v in per_night.items() if n in late and v[0] > 0}
        if not earlier or any(v[1] for v in earlier.values()):
            continue
        failed = sorted(n for n, v in later.items() if v[1])
        if failed:
            cls = next((later[n][2] for n in failed if later[n][2]), "")
            out.append(Flaky(scenario, variant, step, failed, sum(v[1] for v in later.values()),
                             sum(v[0] for v in later.values()), cls, len(earlier)))
    return sorted(out, key=lambda f: (f.variant, f.step))


# --------------------------------------------------------------------------- helpers
def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _night(started: str) -> str:
    try:
        t = dt.datetime.fromisoformat(started)
    except (TypeError, ValueError):
        return dt.datetime.now(dt.timezone.utc).date().isoformat()
    if t.tzinfo is not None:
        t = t.astimezone(dt.timezone.utc)
    return t.date().isoformat()


def _float(v: Any) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None
