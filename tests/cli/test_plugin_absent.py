"""A pytest without the harness's plugin says so, instead of "no tests ran"; the README's command works."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.fixtures import ROOT


def test_a_pytest_without_the_plugin_names_the_command_that_works():
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:teardown_harness", "scenarios/smoke_cpu.yaml"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 4  # pytest's usage error
    err = done.stderr + done.stdout
    assert "teardown_harness pytest plugin is not loaded" in err
    assert ".venv/bin/python -m pytest scenarios/smoke_cpu.yaml" in err


def test_the_readme_runs_scenarios_with_the_environments_own_pytest():
    readme = (ROOT / "README.md").read_text()
    assert ".venv/bin/python -m pytest scenarios/smoke_cpu.yaml" in readme
    assert "(`pytest scenarios/" not in readme


def test_with_the_plugin_a_scenario_is_collected():
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "scenarios/smoke_cpu.yaml"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "scenarios/smoke_cpu.yaml::without_fix::" in done.stdout
