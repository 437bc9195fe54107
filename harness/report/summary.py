"""summary.json, report.md and report.html of a run directory, rebuilt from run.json, the JUnit files
and the events alone.

One pass: results/rundir.py reads every file once, results/summary.py computes the verdict into a
`RunSummary`, and each writer only renders it (the history, a stage
above, appends its line: ci/history.py `write_report`). Everything is derived from files, so
``run.py report RUN_DIR`` gives the same answer on another machine, or after the JUnit files were
downloaded from CI.
"""

from __future__ import annotations

import sys
from pathlib import Path

from harness import atomic
from harness.errors import InfrastructureError
from harness.report import html, markdown
from harness.results import rundir
from harness.results.summary import RunSummary, summarize


def build(run_dir: Path, allow: frozenset | None = None) -> RunSummary:
    """The run's summary (a mapping of what summary.json holds, with the parsed results attached).
    ``allow``: failure classes accepted (--allow); None: those the run was started with."""
    return summarize(rundir.read(Path(run_dir)), allow)


def write(run_dir: Path, allow: frozenset | None = None) -> RunSummary:
    """Build the summary, then write summary.json, report.md and report.html (each appears whole or
    not at all).

    The verdict never depends on the picture: if report.html cannot be written, a warning says so
    and the summary is still returned."""
    run_dir = Path(run_dir)
    summary = build(run_dir, allow)
    try:
        atomic.write_json(run_dir / "summary.json", summary.to_json())
        atomic.write_text(run_dir / "report.md", markdown.render(summary))
    except OSError as e:
        raise InfrastructureError(f"{run_dir}: cannot write the report: {e.strerror or e}") from None
    try:
        atomic.write_text(run_dir / "report.html", html.render(summary, run_dir))
    except Exception as e:  # noqa: BLE001 - a broken picture must not cost the verdict
        print(f"warning: {run_dir / 'report.html'} not written: {type(e).__name__}: {e}", file=sys.stderr)
    return summary
