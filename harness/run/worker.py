"""The worker's entry point: ``python -m harness.run.worker PLAN.json`` runs one (variant, repeat)
of a scenario inside its own process, in any interpreter that has vLLM (standard library only).

The work itself is the plan's suite kind's (harness/run/kinds.py): a scenario's steps
(harness/worker/steps.py) or one pytest session over vLLM's own files (harness/upstream/suite.py).
"""

from __future__ import annotations

import json
import sys

from harness.run import kinds
from harness.worker import lifeline


def main(argv: list[str] | None = None) -> int:
    """Run the worker plan named by ``argv[0]``."""
    argv = sys.argv[1:] if argv is None else argv
    lifeline.watch()  # a runner killed by SIGKILL must not leave this worker holding the device
    with open(argv[0], encoding="utf-8") as f:
        plan = json.load(f)
    return kinds.of_plan(plan).worker_main(plan)


if __name__ == "__main__":
    sys.exit(main())
