"""Engines built with vllm.LLM directly, not through the runner: two in one test."""

from vllm import LLM, SamplingParams


def test_two_direct_engines(example_prompts):
    for seed in (0, 1):
        llm = LLM(model="facebook/opt-125m", seed=seed, max_model_len=256, block_size=16, enforce_eager=True)
        out = llm.generate(example_prompts[:1], SamplingParams(temperature=0.0, max_tokens=4))
        assert len(out[0].outputs[0].token_ids) == 4
        del llm


def test_hf_runner(hf_runner, example_prompts):
    with hf_runner("openai-community/gpt2") as hf_model:
        ids = hf_model.tokenizer(example_prompts[0], return_tensors="pt").input_ids
        assert hf_model.model(ids).logits.shape[1] == ids.shape[1]
