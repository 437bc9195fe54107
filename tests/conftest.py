"""Fixtures shared by test modules."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from harness.bisect import envs
from tests.bisect_fixtures import write_scenario

# a test tree shaped like vLLM's own, run by tests/upstream/test_upstream_suite.py in its own pytest sessions
collect_ignore = ["upstream_tree"]


# Test modules that use the real vLLM (they carry the `vllm` marker), as node ids name them:
# tests/<package>/test_x.py. upstream_tree's modules are run by their own pytest sessions, not here.
_HERE = Path(__file__).parent
VLLM_MODULES = frozenset(p.relative_to(_HERE.parent).as_posix() for p in _HERE.rglob("test_*.py")
                         if _HERE / "upstream_tree" not in p.parents
                         and "pytest.mark.vllm" in p.read_text(encoding="utf-8"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--vllm-lanes", type=int, default=1, metavar="N",
                     help="with --dist loadgroup: how many real-vLLM test modules may run at once (default 1)")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """``--dist loadgroup`` (scripts/test): each module that uses the real vLLM runs on one xdist
    worker, its engines built once by its module-scoped fixture, at most ``--vllm-lanes`` such
    modules at once (tests/vllm_lanes.py); every other test is scheduled on its own, as by
    ``load``. xdist's own loadgroup marks items through ``item._nodeid``, which pytest 9.2 no longer
    reads, so the grouping is done here, by module."""
    if config.getoption("dist") != "loadgroup":
        return None
    from tests.vllm_lanes import VllmLanes

    return VllmLanes(config, log, vllm_modules=VLLM_MODULES, lanes=config.getoption("vllm_lanes"))


@pytest.fixture
def work(tmp_path, monkeypatch) -> Path:
    """A bisect workspace: its own env cache, the cwd, a fresh `fakeengine` import, the scenario."""
    monkeypatch.setenv(envs.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    for name in [m for m in sys.modules if m.split(".")[0] == "fakeengine"]:
        monkeypatch.delitem(sys.modules, name)
    write_scenario(tmp_path / "scenario")
    return tmp_path
