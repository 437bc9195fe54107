"""Fixtures shared by test modules."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from harness.bisect import envs
from tests.bisect_fixtures import write_scenario

# a test tree shaped like vLLM's own, run by tests/test_upstream_suite.py in its own pytest sessions
collect_ignore = ["upstream_tree"]


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups (--dist loadgroup)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Real-vLLM tests run one at a time, on one xdist worker: each engine takes every core it is
    given (a TP=2 engine pins one per rank), and a module's engines are built once, by its
    module-scoped fixture, on the worker that runs all of its tests."""
    for item in items:
        if item.get_closest_marker("vllm") is not None:
            item.add_marker(pytest.mark.xdist_group("vllm"))


@pytest.fixture
def work(tmp_path, monkeypatch) -> Path:
    """A bisect workspace: its own env cache, the cwd, a fresh `fakeengine` import, the scenario."""
    monkeypatch.setenv(envs.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    for name in [m for m in sys.modules if m.split(".")[0] == "fakeengine"]:
        monkeypatch.delitem(sys.modules, name)
    write_scenario(tmp_path / "scenario")
    return tmp_path
