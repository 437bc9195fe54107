"""Shaped like vLLM's tests/conftest.py before PR #43023 (commit 9aaf83ef): a VllmRunner whose
__exit__ shuts the engine core down (errors ignored), deletes the LLM and calls
cleanup_dist_env_and_memory(); an HfRunner whose __exit__ deletes the model and cleans up; the
autouse cleanup_fixture honouring the skip_global_cleanup marker; the autouse
clean_gpu_memory_between_tests that acts only with VLLM_TEST_CLEAN_GPU_MEMORY=1; example_prompts.
Every cleanup it does itself is logged (JSON lines to $UPSTREAM_TREE_LOG) so that a test can count
them."""

import json
import os
import time

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from vllm import LLM, SamplingParams
from vllm.distributed import cleanup_dist_env_and_memory


def log(what, **fields):
    path = os.environ.get("UPSTREAM_TREE_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"t": time.time(), "what": what, **fields}) + "\n")


class HfRunner:
    def __init__(self, model_name, dtype="float32"):
        self.tokenizer = AutoTokenizer.from_pretrained(model_name)
        self.model = AutoModelForCausalLM.from_pretrained(model_name, dtype=dtype)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        log("upstream_exit", runner="HfRunner")
        del self.model
        cleanup_dist_env_and_memory()


class VllmRunner:
    def __init__(self, model_name, seed=0, max_model_len=1024, dtype="auto", block_size=16,
                 enforce_eager=True, **kwargs):
        self.llm = LLM(model=model_name, seed=seed, max_model_len=max_model_len, dtype=dtype,
                       block_size=block_size, enforce_eager=enforce_eager, **kwargs)

    def generate_greedy(self, prompts, max_tokens):
        outputs = self.llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=max_tokens))
        return [(list(o.outputs[0].token_ids), o.outputs[0].text) for o in outputs]

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        log("upstream_exit", runner="VllmRunner")
        try:
            self.llm.llm_engine.engine_core.shutdown()
        except Exception:
            pass
        del self.llm
        cleanup_dist_env_and_memory()


@pytest.fixture(scope="session")
def vllm_runner():
    return VllmRunner


@pytest.fixture(scope="session")
def hf_runner():
    return HfRunner


@pytest.fixture()
def should_do_global_cleanup_after_test(request) -> bool:
    return not request.node.get_closest_marker("skip_global_cleanup")


@pytest.fixture(autouse=True)
def cleanup_fixture(should_do_global_cleanup_after_test: bool):
    yield
    if should_do_global_cleanup_after_test:
        log("cleanup_fixture")
        cleanup_dist_env_and_memory()


@pytest.fixture(autouse=True)
def clean_gpu_memory_between_tests():
    if os.getenv("VLLM_TEST_CLEAN_GPU_MEMORY", "0") != "1":
        yield
        return
    log("clean_gpu_memory", when="before")
    yield
    log("clean_gpu_memory", when="after")


@pytest.fixture
def example_prompts():
    return ["Hello, my name is", "The capital of France is", "A computer program is"]
