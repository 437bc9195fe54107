"""A run, stage by stage: the one place that lists what `run.py SCENARIO.yaml` does, in order.

    load -> select -> plan -> execute -> read -> decide -> render -> record

Each stage is a function of the run's `Run` state: it fills in its part and returns None, or an
exit code that ends the run there (nothing selected, a shard without a verdict of its own, an
interrupted run). The verdict exists (``decide``) before anything renders it; the renderers and
the history only receive the typed `RunSummary`. ``run.py report``, ``run.py merge`` and the pytest
plugin enter at ``read`` (`report`); ``run.py trend`` reads the history (`trend`).

The command line (harness/cli.py) maps its arguments to these functions and prints nothing of its
own beyond errors.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from harness import atomic
from harness.ci import shard as shards
from harness.errors import InputError
from harness.model import EXIT_INFRASTRUCTURE, EXIT_INTERRUPTED
from harness.report import console
from harness.report import files as report_files
from harness.report import trend as trend_views
from harness.results import flaky as flakiness
from harness.results import history, rundir
from harness.results.rundir import RunResults
from harness.results.summary import RunSummary, summarize
from harness.run import runner, select
from harness.run.plan import RunPlan
from harness.scenario import schema
from harness.scenario.schema import Scenario
from harness.scenario.yamlsafe import SUFFIXES as YAML_SUFFIXES


@dataclass
class Run:
    """What flows through the stages of one run; each stage fills in its field."""

    scenario_path: Path
    options: runner.RunOptions
    step: list[str] | None = None  # --step
    keyword: str | None = None  # -k
    shard: str | None = None  # --shard K/N
    sets: tuple = ()  # --set PATH=VALUE (harness/scenario/overrides.py)
    allow: frozenset | None = None  # --allow; None: run.json's
    scenario: Scenario | None = None  # load
    partial: bool = False  # select: one shard of several, no verdict of its own
    plan: RunPlan | None = None  # plan
    result: runner.RunResult | None = None  # execute
    results: RunResults | None = None  # read
    summary: RunSummary | None = None  # decide
    run_dir: Path | None = None


# --------------------------------------------------------------------------- the stages
def load(run: Run) -> int | None:
    """The scenario, loaded and checked once: bad input fails before anything is shown or run."""
    run.scenario = schema.load(run.scenario_path, run.sets)
    return None


def select_work(run: Run) -> int | None:
    """The steps (--step, -k) and the (variant, repeat) pairs (--shard, or Buildkite's parallel job)
    this invocation runs; exit 0 when this shard has nothing to do."""
    opts = run.options
    opts.steps = select.steps([s.name for s in run.scenario.steps], run.step, run.keyword,
                              where=str(run.scenario_path))
    run.partial = shards.configure(opts, run.scenario, run.shard)
    return 0 if opts.only == [] else None


def plan(run: Run) -> int | None:
    """The worker plans, with every substitution this machine needs (printed first)."""
    run.plan = runner.plan(run.scenario, run.options)
    return None


def execute(run: Run) -> int | None:
    """Every (variant, repeat) in its own worker, with the progress shown; a shard ends here."""
    opts = run.options
    n_steps = len(opts.steps) if opts.steps is not None else len(run.scenario.steps)
    with console.Progress(n_steps) as progress:
        opts.progress = progress
        run.result = runner.execute(run.plan, opts)
    run.run_dir = run.result.run_dir
    if run.partial:
        print(f"results: {run.run_dir} (shard {opts.shard}: no verdict of its own; "
              "join the shards with `run.py merge RUN_DIR...`)")
        _say_problems(run.result.problems)
        return EXIT_INTERRUPTED if run.result.incomplete else EXIT_INFRASTRUCTURE if run.result.problems else 0
    return None


def read(run: Run) -> int | None:
    """The run directory, every file parsed once (results/rundir.py)."""
    run.results = rundir.read(run.run_dir)
    return None


def decide(run: Run) -> int | None:
    """The verdict, the culprits and the leaks: one typed `RunSummary` (results/summary.py)."""
    run.summary = summarize(run.results, run.allow)
    return None


def render(run: Run) -> int | None:
    """summary.json, report.md, report.html, then the console table."""
    report_files.write(run.run_dir, run.summary)
    return None


def record(run: Run) -> int | None:
    """The run's records appended to the history; the verdict never depends on it."""
    try:
        history.append_run(run.summary, run.run_dir)
    except Exception as e:  # noqa: BLE001
        print(f"warning: history not appended: {type(e).__name__}: {e}", file=sys.stderr)
    return None


#: a run, in order
STAGES: tuple[Callable[[Run], int | None], ...] = (load, select_work, plan, execute, read, decide, render, record)
#: a finished run directory (`run.py report`, `merge`, the pytest plugin)
REPORT_STAGES = (read, decide, render, record)


def run_stages(run: Run, stages=STAGES) -> int | None:
    """Each stage in turn; the first exit code ends the run."""
    for stage in stages:
        code = stage(run)
        if code is not None:
            return code
    return None


# --------------------------------------------------------------------------- entry points
def run_scenario(run: Run) -> int:
    """`run.py SCENARIO.yaml`: every stage, then the verdict on the console; the exit code, which is
    summary.json's (as `report` and `merge` give it: 3 for a collection problem) unless the run was
    interrupted (130)."""
    code = run_stages(run, STAGES[:STAGES.index(read)])
    if code is not None:
        return code
    # a Ctrl-C while the reports are written does not leave the run directory without them
    _, interrupted = runner.shielded(lambda: run_stages(run, REPORT_STAGES))
    console.summary_table(run.summary)
    print(f"results: {run.run_dir}")
    if run.result.incomplete or interrupted:
        return EXIT_INTERRUPTED
    _say_problems(run.result.problems)
    return run.summary.exit_code


def _say_problems(problems: list[str]) -> None:
    for line in problems:  # a pytest suite that did not run as asked: never a silent "0 tests"
        print(f"error: {line}", file=sys.stderr)


def summary_of(run_dir: Path, allow: frozenset | None = None) -> RunSummary:
    """A run directory read and decided, nothing written. ``allow``: failure classes accepted
    (--allow); None: those the run was started with."""
    run = Run(Path(run_dir), runner.RunOptions(), allow=allow, run_dir=Path(run_dir))
    run_stages(run, (read, decide))
    return run.summary


def report(run_dir: Path, allow: frozenset | None = None, *, record_history: bool = True) -> RunSummary:
    """A finished run directory's reports (read, decide, render), then its history records.
    ``allow``: failure classes accepted (--allow); None: those the run was started with."""
    run = Run(Path(run_dir), runner.RunOptions(), allow=allow, run_dir=Path(run_dir))
    run_stages(run, REPORT_STAGES if record_history else (read, decide, render))
    return run.summary


def merge(run_dirs: list[Path], out: Path, allow: frozenset | None = None) -> tuple[Path, RunSummary]:
    """The run directories of a run's shards joined into a new one under ``out``, then reported."""
    run_dir = shards.merge(run_dirs, out)
    return run_dir, report(run_dir, allow)


# --------------------------------------------------------------------------- the trend
def scenario_name(arg: str | None) -> str | None:
    """``sampler_mi250`` or ``scenarios/sampler_mi250.yaml`` (its ``name``) -> the scenario's name."""
    if not arg:
        return None
    path = Path(arg)
    if path.suffix in YAML_SUFFIXES:
        if path.is_file():
            return schema.load(path).name
        return path.stem
    return arg


def _history(out: Path, warn: Callable[[str], None]) -> tuple[Path, list[dict]]:
    """The history of results directory ``out`` (its path, its records); its odd lines warned about."""
    path = history.history_path(out)
    if not path.exists():
        raise InputError(f"{path}: no history yet (every finished run appends to it)")
    records, warnings = history.load(path)
    for w in warnings:
        warn(f"warning: {w}")
    return path, records


def _no_runs(path: Path, scenario: str | None, records: list[dict]) -> InputError:
    known = sorted({str(r["scenario"]) for r in records})
    return InputError(f"{path}: no runs of scenario {scenario!r} (recorded: {', '.join(known) or 'none'})")


def trend(out: Path, scenario: str | None = None, nights: int = 14, recent: int = 3,
          html_out: Path | None = None, warn: Callable[[str], None] | None = None,
          console: Any = None) -> list[history.ScenarioTrend]:
    """`run.py trend`: read the history of results directory ``out``, print the trend, write the
    HTML page."""
    path, records = _history(out, warn or _stderr)
    trends = history.trend(records, scenario, nights, recent)
    if not trends:
        raise _no_runs(path, scenario, records)
    trend_views.print_trend(trends, console)
    if html_out is not None:
        html_out = Path(html_out)
        try:
            html_out.parent.mkdir(parents=True, exist_ok=True)
            atomic.write_text(html_out, trend_views.render_html(trends))
        except OSError as e:
            raise InputError(f"{html_out}: cannot write: {e.strerror or e}") from None
    return trends


def flaky(out: Path, scenario: str | None = None, nights: int = 14, min_runs: int = flakiness.DEFAULT_MIN_RUNS,
          as_json: bool = False, console: Any = None) -> list[flakiness.FlakyTest]:
    """`run.py trend --flaky`: tests of the history of ``out`` ranked by flip rate on one code
    revision, then failure rate (results/flaky.py), printed, or as JSON."""
    path, records = _history(out, _stderr)
    tests = flakiness.flaky(records, scenario, nights, min_runs)
    if not tests:
        raise _no_runs(path, scenario, records)
    if as_json:
        print(json.dumps({"version": 1, "min_runs": min_runs, "tests": [t.to_json() for t in tests]}, indent=2))
    else:
        trend_views.print_flaky(tests, min_runs, console)
    return tests


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)
