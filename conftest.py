"""Loaded by any pytest run from this checkout, even one whose environment lacks the harness.

Scenario YAML files are collected by the harness's pytest plugin (entry point ``pytest11:
teardown_harness``), which only exists where the harness is installed. A ``pytest`` from another
environment (the one first on PATH, say) would answer "no tests ran" or "not found"; say why instead.
"""

from __future__ import annotations

import sys

import pytest

PLUGIN = "teardown_harness"


def pytest_configure(config: pytest.Config) -> None:
    if config.pluginmanager.has_plugin(PLUGIN) or config.pluginmanager.has_plugin("harness.ci.pytest_plugin"):
        return
    scenarios = [a for a in config.args if str(a).split("::", 1)[0].endswith((".yaml", ".yml"))]
    if scenarios:
        raise pytest.UsageError(
            f"{scenarios[0]}: the {PLUGIN} pytest plugin is not loaded in this pytest ({sys.executable}): "
            "it is not installed in that environment, or -p no:teardown_harness disabled it. "
            f"Run the environment's own pytest: .venv/bin/python -m pytest {' '.join(map(str, config.args))}")
