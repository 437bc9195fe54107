"""The render stage: summary.json, report.md and report.html of a run directory, from its typed
`RunSummary` alone (harness/pipeline.py decides it first, from the files of the run directory).

Everything the summary holds is derived from files, so ``run.py report RUN_DIR`` gives the same
answer on another machine, or after the JUnit files were downloaded from CI.
"""

from __future__ import annotations

import sys
from pathlib import Path

from harness import atomic
from harness.errors import InfrastructureError
from harness.report import html, markdown
from harness.results.summary import RunSummary


def write(run_dir: Path, summary: RunSummary) -> RunSummary:
    """Write summary.json, report.md and report.html of ``summary`` into ``run_dir`` (each appears
    whole or not at all).

    The verdict never depends on the picture: if report.html cannot be written, a warning says so
    and the summary is still returned."""
    run_dir = Path(run_dir)
    try:
        atomic.write_json(run_dir / "summary.json", summary.to_json())
        atomic.write_text(run_dir / "report.md", markdown.render(summary))
    except OSError as e:
        raise InfrastructureError(f"{run_dir}: cannot write the report: {e.strerror or e}") from None
    try:
        atomic.write_text(run_dir / "report.html", html.render(summary))
    except Exception as e:  # noqa: BLE001 - a broken picture must not cost the verdict
        print(f"warning: {run_dir / 'report.html'} not written: {type(e).__name__}: {e}", file=sys.stderr)
    return summary
