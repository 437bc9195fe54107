"""The suite's own xdist scheduler (tests/vllm_lanes.py), driven as xdist's controller drives it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests.vllm_lanes import COST_HINTS, VllmLanes

HEAVY, LIGHT = "tests/run/test_vllm_cpu_tp2.py", "tests/run/test_vllm_cpu.py"
OTHER = "tests/run/test_tinymodel.py"  # a real-vLLM module without a hint


class Node:
    """What the scheduler uses of xdist's WorkerController."""

    def __init__(self, name: str) -> None:
        self.name, self.sent, self.shutting_down = name, [], False
        self.gateway = SimpleNamespace(id=name)

    def send_runtest_some(self, indices: list[int]) -> None:
        self.sent.extend(indices)

    def shutdown(self) -> None:
        self.shutting_down = True


def _config(nodes: int):
    """What xdist's scope scheduler reads of the configuration: ``-n`` and ``--loadscope-reorder``."""
    return SimpleNamespace(getvalue=lambda name: [f"{nodes}*popen"], option=SimpleNamespace(loadscopereorder=True))


def _scheduler(collection: list[str], nodes: int, lanes: int):
    vllm = frozenset({HEAVY, LIGHT, OTHER} | set(COST_HINTS))
    sched = VllmLanes(_config(nodes), None, vllm_modules=vllm, lanes=lanes)
    workers = [Node(f"gw{i}") for i in range(nodes)]
    for w in workers:
        sched.add_node(w)
        sched.add_node_collection(w, collection)
    sched.schedule()
    return sched, workers


def _run_all(sched, workers, collection):
    """Complete tests as xdist's workers do, the first busy worker first: a worker runs the last
    test it was sent only once it is sent more, or told to stop when every test has run or is the
    last of its worker (xdist's ``tests_finished``). Return how many real-vLLM modules ran at once."""
    most, done = 0, [0] * len(workers)
    while True:
        if sched.tests_finished:
            for w in workers:
                w.shutdown()
        ready = [(i, w) for i, w in enumerate(workers)
                 if done[i] < len(w.sent) - (0 if w.shutting_down else 1)]
        if not ready:
            break
        # the tests running now: each ready worker's next one
        most = max(most, sum(collection[w.sent[done[i]]].split("::")[0] in sched.vllm_modules for i, w in ready))
        i, w = ready[0]
        sched.mark_test_complete(w, w.sent[done[i]])
        done[i] += 1
    # every test sent once and run: else the run would hang, with no worker able to go on
    assert sorted(collection[k] for w in workers for k in w.sent) == sorted(collection)
    assert done == [len(w.sent) for w in workers] and not sched.workqueue
    return most


def test_at_most_lanes_vllm_modules_run_at_once_and_every_test_runs_once():
    collection = ([f"{m}::test_{k}" for m in (LIGHT, OTHER, HEAVY) for k in range(3)]
                  + [f"tests/x/test_quick.py::test_{k}" for k in range(20)])
    for nodes, lanes in ((4, 2), (4, 1), (2, 2), (1, 1)):
        sched, workers = _scheduler(collection, nodes, lanes)
        assert _run_all(sched, workers, collection) == min(lanes, nodes)


def test_the_costliest_vllm_module_starts_first_and_a_module_stays_on_one_worker():
    collection = [f"{m}::test_{k}" for m in (LIGHT, OTHER, HEAVY) for k in range(3)] + ["tests/x/test_q.py::test_q"]
    sched, workers = _scheduler(collection, 2, 1)
    first = workers[0].sent[0]
    assert collection[first].startswith(HEAVY)
    assert sorted(collection[k] for k in workers[0].sent[:3]) == [f"{HEAVY}::test_{k}" for k in range(3)]
    _run_all(sched, workers, collection)
    for module in (LIGHT, OTHER, HEAVY):
        holders = {w.name for w in workers for k in w.sent if collection[k].startswith(module)}
        assert len(holders) == 1, (module, holders)


def test_a_hint_that_names_no_module_stops_the_run():
    with pytest.raises(pytest.UsageError, match="COST_HINTS names no real-vLLM module"):
        VllmLanes(_config(2), None, vllm_modules=frozenset({LIGHT}), lanes=1)
