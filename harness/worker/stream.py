"""The worker's results as it writes them: the event stream (one JSON object per line, flushed at
once, so the runner sees it) and the variant's log (stdout and stderr, one file).

A full disk while writing either is `ResultsDiskFull`: the run stops, it is no failure of the step.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from harness import atomic
from harness.model import DISK_FULL_ERRNOS


class ResultsDiskFull(Exception):
    """The worker cannot write its results (the events file; the simulated ledger raises
    atomic.DiskFull): the run stops, it is no failure of the step."""


class Events:
    """Appends one JSON object per line and flushes it, so the runner sees it at once."""

    def __init__(self, path: str, variant: str, repeat: int):
        self._f = open(path, "a", encoding="utf-8")
        self._base = {"variant": variant, "repeat": repeat}

    def emit(self, event: str, **fields: Any) -> None:
        """One event (a name of harness/events.py) with its payload, written and flushed."""
        try:
            self._f.write(json.dumps({"t": time.time(), "event": event, **self._base, **fields}, default=str) + "\n")
            self._f.flush()
        except OSError as e:
            if e.errno in DISK_FULL_ERRNOS:
                raise ResultsDiskFull(e) from None
            raise


def text(exc: BaseException) -> str:
    """The message of an exception from the user's code, even one whose __str__ raises."""
    try:
        return str(exc)
    except Exception:  # noqa: BLE001
        return f"<{type(exc).__name__}: its str() raised>"


def disk_full(error: BaseException) -> bool:
    """The worker's own results could not be written (not a full disk the step's code met)."""
    return isinstance(error, (ResultsDiskFull, atomic.DiskFull))


def to_log(text: str | None = None) -> None:
    """Write `text` (if any) to the variant's log and flush it: the log is one of the worker's
    results, so a full disk here stops the run (ResultsDiskFull), as with the events."""
    try:
        if text is not None:
            print(text, file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError as e:
        if e.errno in DISK_FULL_ERRNOS:
            raise ResultsDiskFull(e) from None
        raise


def log_offset() -> int:
    """Byte offset in the variant's log (stdout and stderr go to one file), for per-step log tails."""
    to_log()
    try:
        return os.fstat(1).st_size
    except OSError:
        return 0
