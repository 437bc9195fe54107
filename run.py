#!/usr/bin/env python3
"""Entry point: `python run.py SCENARIO.yaml` (see README.md)."""

import os
import signal

# Ctrl-C while the harness is still being imported ends the program quietly with 130, not with an
# import traceback; harness.cli.main takes Ctrl-C over (children stopped, results kept) once it runs.
signal.signal(signal.SIGINT, lambda signum, frame: os._exit(130))

import sys  # noqa: E402

from harness.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
