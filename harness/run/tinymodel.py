"""A deterministic tiny Llama for machines that cannot reach a model hub.

``ensure_tiny_llama()`` returns a directory that ``vllm.LLM(model=str(path))`` loads: a 2-layer
``LlamaForCausalLM`` (hidden 128, 2 heads of 64, vocabulary 512) with seeded random weights and a
byte-level BPE tokenizer trained on the small English corpus below. Everything is derived from
``RECIPE``; the directory name carries a hash of it, so a changed recipe builds a new directory and
an unchanged one is built once per cache and reused.

Building needs numpy, safetensors and tokenizers, not torch. The directory is written under a
temporary sibling name and renamed into place, so a reader never sees half a model and two
processes building at once both end up with one complete copy.

The weights are scaled so that the model is not degenerate: the logits have a standard deviation of
about ``LOGIT_STD`` and depend on the context through attention, so greedy output is not one
repeated token, different sampling seeds give different text, and a repetition penalty changes the
greedy output. The rows of ``lm_head`` for the special tokens are zero, so their logit is always 0
while ordinary tokens spread around it: generations practically never stop on EOS by themselves
(use ``max_tokens``, stop strings or stop token ids to end them).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

#: Bump when the build changes in a way the recipe below does not capture.
RECIPE_VERSION = 1

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")  # ids 0, 1, 2 as in Llama
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2

#: Standard deviation of the output logits of an ordinary token.
LOGIT_STD = 3.0

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] }}: {{ message['content'] }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)

#: The tokenizer's training text: a few hundred words of varied English, one paragraph a line.
CORPUS = """\
The morning train left the station a few minutes late, and most of the passengers did not notice.
A woman near the window was reading a letter from her brother, who had moved to the coast last spring.
He wrote that the weather was mild, the rent was cheap, and the fish market opened before sunrise.
She smiled, folded the paper twice, and looked out at the fields sliding past in the grey light.
In the kitchen, the recipe called for two cups of flour, one egg, a pinch of salt, and warm milk.
Stir the batter slowly until it is smooth, then let it rest for ten minutes before you cook it.
Heat a small pan, add a little butter, and pour in just enough batter to cover the bottom.
When bubbles form on the surface, turn the pancake over and cook the other side until golden.
The committee met on Tuesday to discuss the budget for the new library and the repairs to the bridge.
Several members argued that the roads should come first, because the winter had been unusually hard.
Others said that a town without books is poorer than a town with potholes, and the debate went on.
In the end they voted to split the money, which pleased nobody but seemed fair to almost everyone.
A computer program is a list of instructions that a machine follows exactly, one step after another.
If the instructions are wrong, the machine will still follow them, and the result will be wrong too.
Good programmers test their code often, read error messages carefully, and keep their functions short.
Memory that is allocated must eventually be released, or the program will slowly run out of space.
The old lighthouse keeper climbed the spiral stairs every evening to light the great lamp at the top.
From there he could see the harbour, the dark cliffs, and the small boats returning with their catch.
On stormy nights the waves crashed against the rocks, and the wind howled through the broken shutters.
He kept a logbook of every ship that passed, written in a careful hand with a pencil and a ruler.
Why do leaves change colour in autumn? As the days grow shorter, trees stop making green chlorophyll.
The yellow and orange pigments that were hidden all summer become visible, and some leaves turn red.
Then the leaves fall, the branches stand bare, and the tree waits quietly for the return of spring.
Children collect the brightest leaves, press them between the pages of heavy books, and forget them.
Seven students sat at the long table, each with a notebook, a calculator, and a cup of strong coffee.
The professor wrote an equation on the board and asked whether anyone could explain the second term.
Nobody answered at first; then a quiet voice from the back of the room offered a simple, clear idea.
Numbers like 3, 14, 159 and 2024 appear in questions, prices, dates, and the pages of old reports.
"""


def _recipe() -> dict:
    return {
        "version": RECIPE_VERSION,
        "config": _config(),
        "weights": {"seed": 20240611, "logit_std": LOGIT_STD, "attn_gain": 1.5, "zero_special_rows": True},
        "tokenizer": {"type": "byte-level-bpe", "vocab_size": 512, "min_frequency": 1,
                      "special_tokens": list(SPECIAL_TOKENS), "corpus_sha256": _sha256(CORPUS.encode()),
                      "chat_template": CHAT_TEMPLATE},
    }


def _config() -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "head_dim": 64,
        "hidden_act": "silu",
        "vocab_size": 512,
        "max_position_embeddings": 512,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "initializer_range": 0.02,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "use_cache": True,
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "pad_token_id": None,
    }


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def recipe_hash() -> str:
    """Short hash of everything the build depends on."""
    return _sha256(json.dumps(_recipe(), sort_keys=True).encode())[:12]


def model_dir_name() -> str:
    return f"tiny-llama-v{RECIPE_VERSION}-{recipe_hash()}"


def default_cache_root() -> Path:
    env = os.environ.get("HARNESS_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "vllm-teardown-harness"


def ensure_tiny_llama(cache_root: Path | None = None) -> Path:
    """Return the tiny Llama's directory under ``cache_root``, building it first if it is absent."""
    root = Path(cache_root).expanduser() if cache_root is not None else default_cache_root()
    models = root / "models"
    dest = models / model_dir_name()
    if dest.is_dir():
        return dest
    models.mkdir(parents=True, exist_ok=True)
    _remove_stale_builds(models, dest.name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-{os.getpid()}-", dir=models))
    try:
        _build(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private
        _fsync_dir(tmp)
        try:
            os.rename(tmp, dest)
        except OSError:
            # Another process finished first (the destination exists and is not empty): keep theirs.
            if not dest.is_dir():
                raise
        else:
            _fsync_dir(models)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _remove_stale_builds(models: Path, name: str, older_than_s: float = 3600.0) -> None:
    """Remove temporary directories left by builds that died (a build takes well under a second)."""
    now = time.time()
    for p in models.glob(f".{name}.tmp-*"):
        try:
            if now - p.stat().st_mtime > older_than_s:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def _build(out: Path) -> None:
    recipe = _recipe()
    tokenizer = _train_tokenizer(recipe["tokenizer"])
    _write_json(out / "config.json", recipe["config"])
    _write_json(out / "generation_config.json",
                {"bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "_from_model_config": True})
    _write_weights(out / "model.safetensors", recipe["config"], recipe["weights"])
    tokenizer.save(str(out / "tokenizer.json"))
    _fsync_file(out / "tokenizer.json")
    bos, eos, unk = SPECIAL_TOKENS[BOS_ID], SPECIAL_TOKENS[EOS_ID], SPECIAL_TOKENS[UNK_ID]
    _write_json(out / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": bos,
        "eos_token": eos,
        "unk_token": unk,
        "model_max_length": recipe["config"]["max_position_embeddings"],
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    })
    _write_json(out / "special_tokens_map.json", {"bos_token": bos, "eos_token": eos, "unk_token": unk})
    _write_json(out / "recipe.json", {"name": model_dir_name(), **recipe})
    for f in out.iterdir():
        os.chmod(f, 0o644)  # safetensors writes its file private


def _train_tokenizer(spec: dict):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS[UNK_ID]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec["vocab_size"],
        min_frequency=spec["min_frequency"],
        special_tokens=list(spec["special_tokens"]),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # One paragraph at a time, in a fixed order; the trainer breaks ties between equally frequent
    # pairs deterministically (checked by tests/run/test_tinymodel.py across processes).
    tok.train_from_iterator(CORPUS.splitlines(), trainer=trainer)
    if tok.get_vocab_size() != spec["vocab_size"]:
        raise RuntimeError(f"tiny Llama tokenizer has {tok.get_vocab_size()} tokens, "
                           f"expected {spec['vocab_size']}: the corpus is too small")
    for i, t in enumerate(SPECIAL_TOKENS):
        if tok.token_to_id(t) != i:
            raise RuntimeError(f"tiny Llama tokenizer: {t} has id {tok.token_to_id(t)}, expected {i}")
    bos = SPECIAL_TOKENS[BOS_ID]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, BOS_ID)])
    return tok


def _weights(config: dict, spec: dict) -> dict:
    import numpy as np

    hidden = config["hidden_size"]
    inter = config["intermediate_size"]
    vocab = config["vocab_size"]
    heads, kv_heads, head_dim = config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]

    def normal(name: str, shape: tuple[int, ...], std: float) -> np.ndarray:
        # One stream per tensor, seeded from (seed, name): adding a tensor changes no other one.
        seed = int.from_bytes(hashlib.sha256(f"{spec['seed']}:{name}".encode()).digest()[:8], "little")
        rng = np.random.Generator(np.random.PCG64(seed))
        return (rng.standard_normal(shape, dtype=np.float64) * std).astype(np.float32)

    def ones(n: int) -> np.ndarray:
        return np.ones((n,), dtype=np.float32)

    w = {"model.embed_tokens.weight": normal("embed", (vocab, hidden), 1.0)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        # Inputs to every projection are RMS-normalised (unit scale), so 1/sqrt(fan_in) keeps unit
        # scale; the query/key gain makes attention depend on the context rather than average it.
        qk = spec["attn_gain"] / hidden ** 0.5
        w[p + "self_attn.q_proj.weight"] = normal(p + "q", (heads * head_dim, hidden), qk)
        w[p + "self_attn.k_proj.weight"] = normal(p + "k", (kv_heads * head_dim, hidden), qk)
        w[p + "self_attn.v_proj.weight"] = normal(p + "v", (kv_heads * head_dim, hidden), hidden ** -0.5)
        w[p + "self_attn.o_proj.weight"] = normal(p + "o", (hidden, heads * head_dim), (heads * head_dim) ** -0.5)
        w[p + "mlp.gate_proj.weight"] = normal(p + "gate", (inter, hidden), hidden ** -0.5)
        w[p + "mlp.up_proj.weight"] = normal(p + "up", (inter, hidden), hidden ** -0.5)
        w[p + "mlp.down_proj.weight"] = normal(p + "down", (hidden, inter), inter ** -0.5)
        w[p + "input_layernorm.weight"] = ones(hidden)
        w[p + "post_attention_layernorm.weight"] = ones(hidden)
    w["model.norm.weight"] = ones(hidden)
    lm_head = normal("lm_head", (vocab, hidden), spec["logit_std"] / hidden ** 0.5)
    if spec["zero_special_rows"]:
        lm_head[: len(SPECIAL_TOKENS)] = 0.0
    w["lm_head.weight"] = lm_head
    return w


def _write_weights(path: Path, config: dict, spec: dict) -> None:
    from safetensors.numpy import save_file

    save_file(_weights(config, spec), str(path), metadata={"format": "pt"})
    _fsync_file(path)


def _write_json(path: Path, data: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        _fsync_file(path)
    except OSError:  # some filesystems do not fsync directories
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.run.tinymodel",
                                     description="Build (once) the deterministic tiny Llama and print its path.")
    parser.add_argument("--cache", type=Path, default=None,
                        help="cache root (default: $HARNESS_CACHE, else ~/.cache/vllm-teardown-harness)")
    args = parser.parse_args(argv)
    print(ensure_tiny_llama(args.cache))
    return 0


if __name__ == "__main__":
    sys.exit(main())
