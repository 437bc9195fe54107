import pytest

from tests.conftest import log

MODELS = ["facebook/opt-125m"]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("max_tokens", [8])
def test_greedy(vllm_runner, example_prompts, model, max_tokens):
    with vllm_runner(model) as vllm_model:
        outputs = vllm_model.generate_greedy(example_prompts, max_tokens)
        log("body_end", test="test_greedy")
    log("after_with", test="test_greedy")
    assert [len(ids) for ids, _ in outputs] == [max_tokens] * len(example_prompts)


def test_upstream_assertion_fails(vllm_runner, example_prompts):
    with vllm_runner("facebook/opt-125m") as vllm_model:
        outputs = vllm_model.generate_greedy(example_prompts[:1], 4)
    assert len(outputs[0][0]) == 5, "four tokens asked for, five expected: fails on purpose"


@pytest.mark.skip(reason="needs a real GPU")
def test_needs_gpu(vllm_runner):
    raise AssertionError("never runs")
