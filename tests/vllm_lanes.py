"""How scripts/test spreads the suite over xdist workers (``--dist loadgroup``, see tests/conftest.py).

Most tests are quick, or wait on timers and child processes more than they compute, so they run
on more workers than there are cores. A module that uses the real vLLM is different: its engines
take whole cores, and a module-scoped fixture builds them once for all its tests. So each such
module is one unit of work for one worker, and at most ``lanes`` of them run at once, the
costliest first, so that the last one to start is a short one. Every other test is a unit of its
own, handed out as by xdist's ``load``.
"""

from __future__ import annotations

from typing import Mapping

import pytest
from xdist.scheduler import LoadScopeScheduling

# Seconds each real-vLLM module took on two idle cores: only the order matters (costliest first).
# A module not listed starts after these; a listed name that matches no module stops the run,
# so that a rename cannot quietly turn the order off.
COST_HINTS: Mapping[str, int] = {
    "tests/devicemodel/test_devicemodel_child.py": 120,
    "tests/run/test_vllm_cpu_tp2.py": 100,
    "tests/upstream/test_upstream_suite.py": 75,
    "tests/upstream/test_native_checkouts.py": 57,
    "tests/upstream/test_upstream_not_proven.py": 30,
    "tests/devicemodel/test_devicemodel_vllm.py": 60,
    "tests/run/test_vllm_cpu.py": 40,
}


class VllmLanes(LoadScopeScheduling):
    """xdist's scope scheduler, with the real-vLLM modules as scopes that share ``lanes`` lanes."""

    def __init__(self, config: pytest.Config, log, *, vllm_modules: frozenset[str], lanes: int) -> None:
        super().__init__(config, log)
        unknown = sorted(set(COST_HINTS) - vllm_modules)
        if unknown:
            raise pytest.UsageError(f"tests/vllm_lanes.py: COST_HINTS names no real-vLLM module: {', '.join(unknown)}")
        self.vllm_modules = vllm_modules
        self.lanes = max(1, lanes)

    def _split_scope(self, nodeid: str) -> str:
        module = nodeid.split("::", 1)[0]
        return module if module in self.vllm_modules else nodeid

    def _running_vllm(self, node=None) -> int:
        """Real-vLLM modules with tests still to run. An xdist worker runs the last test it was sent
        only once it is sent more or told to stop (the test's teardown needs to know what comes
        next), so a module of ``node`` whose last test alone is left counts as finished for it: that
        test runs just before whatever ``node`` is sent next, on the same worker."""
        return sum(1 for other, work in self.assigned_work.items() for scope, tests in work.items()
                   if scope in self.vllm_modules
                   and list(tests.values()).count(False) > (1 if other is node else 0))

    def _next_scope(self, node) -> str | None:
        """The costliest real-vLLM module while a lane is free, else the first other test."""
        if self._running_vllm(node) < self.lanes:
            vllm = [s for s in self.workqueue if s in self.vllm_modules]
            if vllm:
                return max(vllm, key=lambda s: (COST_HINTS.get(s, 0), -list(self.workqueue).index(s)))
        return next((s for s in self.workqueue if s not in self.vllm_modules), None)

    def _assign_work_unit(self, node) -> None:
        scope = self._next_scope(node)
        if scope is None:  # only real-vLLM modules are left and every lane is taken: the worker whose
            return         # lane comes free takes the next (xdist stops idle workers once all ran)
        work_unit = self.workqueue.pop(scope)
        self.assigned_work.setdefault(node, {})[scope] = work_unit
        collection = self.registered_collections[node]
        node.send_runtest_some([collection.index(nodeid) for nodeid, done in work_unit.items() if not done])
