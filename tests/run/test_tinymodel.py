"""The built-in tiny Llama: deterministic, cached atomically, loadable by vLLM on CPU."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.run import tinymodel
from tests.fixtures import ROOT

EXPECTED_FILES = {
    "config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
    "tokenizer_config.json", "special_tokens_map.json", "recipe.json",
}


def _digests(model_dir: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(model_dir.iterdir())}


def _build_in_subprocess(cache: Path, hash_seed: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "HARNESS_CACHE": "/nonexistent-should-not-be-used"}
    return subprocess.Popen([sys.executable, "-m", "harness.run.tinymodel", "--cache", str(cache)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> Path:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return Path(out.strip())


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tinymodel.ensure_tiny_llama(tmp_path_factory.mktemp("tiny-cache"))


def test_layout_and_name(model_dir: Path, tmp_path: Path):
    assert {p.name for p in model_dir.iterdir()} == EXPECTED_FILES
    assert model_dir.parent.name == "models"
    assert model_dir.name == f"tiny-llama-v{tinymodel.RECIPE_VERSION}-{tinymodel.recipe_hash()}"
    assert not [p for p in model_dir.parent.iterdir() if p != model_dir], "temporary directory left behind"
    config = json.loads((model_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["hidden_size"] // config["num_attention_heads"] == config["head_dim"] == 64
    assert config["num_key_value_heads"] == 2 and config["num_hidden_layers"] == 2
    assert config["torch_dtype"] == "float32" and config["tie_word_embeddings"] is False


def test_weight_names_shapes_and_scale(model_dir: Path):
    import numpy as np
    from safetensors.numpy import load_file

    config = json.loads((model_dir / "config.json").read_text())
    w = load_file(str(model_dir / "model.safetensors"))
    h, v, i = config["hidden_size"], config["vocab_size"], config["intermediate_size"]
    expected = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,), "lm_head.weight": (v, h)}
    for n in range(config["num_hidden_layers"]):
        p = f"model.layers.{n}."
        expected.update({
            p + "self_attn.q_proj.weight": (h, h), p + "self_attn.k_proj.weight": (h, h),
            p + "self_attn.v_proj.weight": (h, h), p + "self_attn.o_proj.weight": (h, h),
            p + "mlp.gate_proj.weight": (i, h), p + "mlp.up_proj.weight": (i, h),
            p + "mlp.down_proj.weight": (h, i),
            p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
        })
    assert {k: t.shape for k, t in w.items()} == expected
    assert all(t.dtype == np.float32 and np.isfinite(t).all() for t in w.values())
    # Logits of ordinary tokens spread around the (zero) logits of the special tokens.
    assert not w["lm_head.weight"][:3].any()
    assert 0.5 < float(w["lm_head.weight"][3:].std()) * h ** 0.5 < 10


def test_deterministic_across_processes_and_roots(tmp_path: Path):
    a = _build_in_subprocess(tmp_path / "a", "1")
    b = _build_in_subprocess(tmp_path / "b", "2")
    da, db = _finish(a), _finish(b)
    assert da.parent.parent == tmp_path / "a" and db.parent.parent == tmp_path / "b"
    assert da.name == db.name
    digests = _digests(da)
    assert set(digests) == EXPECTED_FILES
    assert digests == _digests(db)
    assert digests == _digests(tinymodel.ensure_tiny_llama(tmp_path / "c"))  # and in this process


def test_cache_is_reused_not_rebuilt(tmp_path: Path, monkeypatch):
    first = tinymodel.ensure_tiny_llama(tmp_path)
    stamps = {p.name: p.stat().st_mtime_ns for p in [first, *first.iterdir()]}

    def no_build(out):
        raise AssertionError("rebuilt a cached model")

    monkeypatch.setattr(tinymodel, "_build", no_build)
    second = tinymodel.ensure_tiny_llama(tmp_path)
    assert second == first
    assert {p.name: p.stat().st_mtime_ns for p in [second, *second.iterdir()]} == stamps


def test_cache_root_from_environment(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "env-cache"))
    path = tinymodel.ensure_tiny_llama()
    assert path.parent == tmp_path / "env-cache" / "models"
    monkeypatch.delenv("HARNESS_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert tinymodel.default_cache_root() == tmp_path / "home" / ".cache" / "vllm-teardown-harness"


def test_concurrent_builds_leave_one_complete_copy(tmp_path: Path):
    procs = [_build_in_subprocess(tmp_path, str(n)) for n in range(4)]
    paths = {_finish(p) for p in procs}
    assert len(paths) == 1
    (path,) = paths
    assert [p.name for p in (tmp_path / "models").iterdir()] == [path.name]
    assert _digests(path) == _digests(tinymodel.ensure_tiny_llama(tmp_path / "reference"))


def test_lost_race_keeps_the_winner(tmp_path: Path, monkeypatch):
    """The destination appears while this process builds: its own copy is discarded."""
    winner = tinymodel.ensure_tiny_llama(tmp_path / "other")
    dest = tmp_path / "models" / winner.name
    real_build = tinymodel._build

    def build_while_another_wins(out):
        real_build(out)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.rename(winner, dest)
        (dest / "marker").write_text("winner")

    monkeypatch.setattr(tinymodel, "_build", build_while_another_wins)
    assert tinymodel.ensure_tiny_llama(tmp_path) == dest
    assert (dest / "marker").read_text() == "winner"
    assert [p.name for p in (tmp_path / "models").iterdir()] == [dest.name]


TEXTS = [
    "The lighthouse keeper climbed the stairs.",
    "Hello, world!  Two spaces, a tab\tand a newline\n",
    "Unicode: café, naïve, 日本語, emoji 🚀 — and numbers 3.14159",
    "",
]


def test_tokenizer_round_trips(model_dir: Path):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    assert tok.get_vocab_size() == json.loads((model_dir / "config.json").read_text())["vocab_size"]
    assert [tok.token_to_id(t) for t in ("<unk>", "<s>", "</s>")] == [0, 1, 2]
    for text in TEXTS:
        enc = tok.encode(text)
        assert enc.ids[0] == tinymodel.BOS_ID
        assert tok.decode(enc.ids, skip_special_tokens=True) == text
    # Trained on the corpus: common words are single tokens.
    assert len(tok.encode(" the", add_special_tokens=False).ids) == 1


def test_tokenizer_loads_in_transformers(model_dir: Path):
    transformers = pytest.importorskip("transformers")
    tok = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    assert (tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (1, 2, 0)
    for text in TEXTS:
        ids = tok(text).input_ids
        assert tok.decode(ids, skip_special_tokens=True) == text
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                     add_generation_prompt=True)
    assert prompt == "user: hi\nassistant:"


_VLLM_SCRIPT = textwrap.dedent("""
    import json, sys

    def main():
        from vllm import LLM, SamplingParams

        llm = LLM(model=sys.argv[1], dtype="float32", distributed_executor_backend="uni",
                  enforce_eager=True, max_model_len=256, seed=0)
        prompts = ["The lighthouse keeper", "Memory that is allocated"]
        greedy = SamplingParams(temperature=0.0, max_tokens=16)
        runs = [[o.outputs[0].token_ids for o in llm.generate(prompts, greedy, use_tqdm=False)]
                for _ in range(2)]
        texts = [o.outputs[0].text for o in llm.generate(prompts, greedy, use_tqdm=False)]
        llm.llm_engine.engine_core.shutdown()
        print("RESULT " + json.dumps({"runs": [[list(t) for t in r] for r in runs], "texts": texts}))

    if __name__ == "__main__":
        main()
""")


@pytest.mark.vllm
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed")
def test_vllm_generates_greedily_and_deterministically(model_dir: Path):
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1"}
    proc = subprocess.run([sys.executable, "-c", _VLLM_SCRIPT, str(model_dir)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    first, second = result["runs"]
    assert first == second
    for ids in first:
        assert len(ids) == 16  # the special tokens' logits are never the largest: no early EOS
        assert len(set(ids)) > 1  # not one repeated token
    assert first[0] != first[1]
    assert all(result["texts"])


def test_stale_temporary_builds_are_removed(tmp_path: Path):
    name = tinymodel.model_dir_name()
    models = tmp_path / "models"
    stale, fresh = models / f".{name}.tmp-1-old", models / f".{name}.tmp-2-new"
    for d in (stale, fresh):
        d.mkdir(parents=True)
        (d / "config.json").write_text("{}")
    os.utime(stale, (0, 0))
    path = tinymodel.ensure_tiny_llama(tmp_path)
    assert sorted(p.name for p in models.iterdir()) == sorted([path.name, fresh.name])
