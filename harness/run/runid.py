"""Run ids: when a run started, to the second, and a random suffix so two runs never collide.

Standard library only: the pytest plugin names its session's run directories with it without
importing the runner."""

from __future__ import annotations

import datetime as dt
import secrets


def new_run_id() -> str:
    return dt.datetime.now().strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)
