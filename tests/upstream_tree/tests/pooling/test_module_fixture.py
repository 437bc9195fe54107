"""Shaped like the pooling tests of upstream's #57371: a module-scoped fixture keeps one runner's
engine for the whole module, and a later test of the module builds an engine of its own. A wait
for memory before that construction waits for the module's engine, which lives until the module
ends: it can never succeed (upstream's waited 240 s per test until #57864)."""

import pytest

MODEL = "facebook/opt-125m"


@pytest.fixture(scope="module")
def shared_runner(vllm_runner):
    with vllm_runner(MODEL, gpu_memory_utilization=0.3) as runner:
        yield runner


def test_shared_engine(shared_runner, example_prompts):
    outputs = shared_runner.generate_greedy(example_prompts[:1], 4)
    assert len(outputs[0][0]) == 4


def test_own_engine(vllm_runner, example_prompts):
    with vllm_runner(MODEL, gpu_memory_utilization=0.3) as runner:
        outputs = runner.generate_greedy(example_prompts[:1], 4)
    assert len(outputs[0][0]) == 4
