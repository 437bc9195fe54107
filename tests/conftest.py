"""Fixtures shared by test modules."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from harness.bisect import envs
from tests.bisect_fixtures import write_scenario

# a test tree shaped like vLLM's own, run by tests/test_upstream_suite.py in its own pytest sessions
collect_ignore = ["upstream_tree"]


@pytest.fixture
def work(tmp_path, monkeypatch) -> Path:
    """A bisect workspace: its own env cache, the cwd, a fresh `fakeengine` import, the scenario."""
    monkeypatch.setenv(envs.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    for name in [m for m in sys.modules if m.split(".")[0] == "fakeengine"]:
        monkeypatch.delitem(sys.modules, name)
    write_scenario(tmp_path / "scenario")
    return tmp_path
