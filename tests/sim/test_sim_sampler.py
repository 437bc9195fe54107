"""The simulated engine's sampler, checked with the same expectations (harness.worker.expect) the worker uses."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from harness.worker import expect
from harness.scenario.prompts import PROMPT_SETS
from harness.sim.sampler import EOS_ID, VOCAB, Sampler, SamplingParams, decode, encode

MODEL = "facebook/opt-125m"
EXAMPLE = list(PROMPT_SETS["example"])
SHORT = list(PROMPT_SETS["short"])


def workload(prompts, *sampling, runs=1):
    """What the worker hands to expect: prompts, sampling sets and runs."""
    return SimpleNamespace(prompts=list(prompts), sampling=[dict(s) for s in sampling], runs=runs)


def run(wl, model=MODEL, seed=0) -> expect.Results:
    """results[sampling][run] on one engine, as worker._workload produces them."""
    engine = Sampler(model, seed)
    return [[engine.generate(wl.prompts, dict(sp)) for _ in range(wl.runs)] for sp in wl.sampling]


def check(name, arg, wl, results):
    fails = expect.CHECKS[name].run(arg, results, wl)
    assert not fails, fails


def completions(outputs):
    return [c for out in outputs for c in out["completions"]]


# ---------------------------------------------------------------------- tokens and text
def test_vocabulary_and_round_trip():
    assert 200 <= len(VOCAB) <= 1000 and VOCAB[EOS_ID] == "</s>"
    assert len(set(VOCAB)) == len(VOCAB)
    ids = encode(" the cat sat on the mat.")
    assert decode(ids).startswith(" the cat") and ids[0] == ids[4]
    assert decode([EOS_ID]) == "" and decode([EOS_ID], skip_special_tokens=False) == "</s>"


def test_output_is_the_normalised_form():
    [out] = Sampler(MODEL).generate(["Hello, my name is"], {"temperature": 0.0, "max_tokens": 8, "logprobs": 2})
    assert set(out) == {"prompt", "completions"} and out["prompt"] == "Hello, my name is"
    [comp] = out["completions"]
    assert set(comp) == {"token_ids", "text", "finish_reason", "stop_reason", "logprobs"}
    assert comp["finish_reason"] in ("length", "stop")
    assert all(isinstance(t, int) for t in comp["token_ids"])
    for entry in comp["logprobs"]:
        assert all(isinstance(k, str) and isinstance(v[0], float) and isinstance(v[1], int) for k, v in entry.items())


# ---------------------------------------------------------------------- determinism
def test_greedy_is_deterministic_across_runs_and_engines():
    wl = workload(EXAMPLE, {"temperature": 0.0, "max_tokens": 32}, runs=2)
    results = run(wl)
    check("identical_runs", True, wl, results)
    check("nonempty", True, wl, results)
    check("lengths", True, wl, results)
    assert results == run(wl), "a fresh engine gives the same greedy text"
    assert run(wl, model="distilbert/distilgpt2") != results, "the model name changes the logits"


def test_same_seed_same_output_different_seeds_differ():
    wl = workload(EXAMPLE, {"temperature": 1.0, "top_p": 0.9, "seed": 1, "max_tokens": 24},
                  {"temperature": 1.0, "top_p": 0.9, "seed": 2, "max_tokens": 24}, runs=2)
    results = run(wl)
    check("identical_runs", True, wl, results)
    check("distinct", [[0, 1]], wl, results)


def test_unseeded_requests_follow_the_engine_seed():
    sp = {"temperature": 1.0, "max_tokens": 16}
    a, b = Sampler(MODEL, seed=0), Sampler(MODEL, seed=0)
    first = a.generate(SHORT, sp)
    assert first != a.generate(SHORT, sp), "each request draws anew"
    assert first == b.generate(SHORT, sp), "a fresh engine with the same seed replays the requests"
    assert first != Sampler(MODEL, seed=1).generate(SHORT, sp)


def test_top_k_one_is_greedy():
    wl = workload(SHORT, {"temperature": 0.8, "top_k": 1, "seed": 3, "max_tokens": 16},
                  {"temperature": 0.0, "max_tokens": 16})
    results = run(wl)
    assert results[0][0] == results[1][0]
    check("lengths", True, wl, results)


def test_truncation_keeps_sampled_tokens_in_range():
    wl = workload(EXAMPLE, {"temperature": 1.0, "top_k": 5, "logprobs": 10, "seed": 4, "max_tokens": 24},
                  {"temperature": 0.7, "top_p": 0.5, "min_p": 0.05, "logprobs": 20, "seed": 4, "max_tokens": 24})
    results = run(wl)
    check("logprobs", True, wl, results)  # with top_k set it checks rank <= top_k
    ranks = [entry[str(tok)][1] for comp in completions(results[1][0])
             for tok, entry in zip(comp["token_ids"], comp["logprobs"])]
    assert max(ranks) <= 10, "top_p 0.5 after temperature keeps only the head of the distribution"


# ---------------------------------------------------------------------- logprobs
def test_logprobs_count_and_greedy_rank_one():
    wl = workload(SHORT, {"temperature": 0.0, "logprobs": 5, "max_tokens": 16},
                  {"temperature": 1.0, "top_k": 10, "logprobs": 5, "seed": 0, "max_tokens": 16},
                  {"temperature": 1.0, "logprobs": 0, "seed": 0, "max_tokens": 16})
    results = run(wl)
    check("logprobs", True, wl, results)
    check("lengths", True, wl, results)
    for comp in completions(results[0][0]):
        for tok, entry in zip(comp["token_ids"], comp["logprobs"]):
            assert len(entry) == 5 and entry[str(tok)][1] == 1
            assert sum(math.exp(v[0]) for v in entry.values()) < 1.0, "five of the vocabulary's tokens"
            ordered = sorted(entry.values(), key=lambda v: v[1])
            assert [v[1] for v in ordered] == [1, 2, 3, 4, 5]
            assert all(a[0] >= b[0] for a, b in zip(ordered, ordered[1:])), "rank 1 is the most likely"
    for comp in completions(results[2][0]):
        assert all(len(entry) == 1 and str(tok) in entry for tok, entry in zip(comp["token_ids"], comp["logprobs"]))


def test_logprobs_follow_temperature():
    """The returned logprobs are those of the distribution after temperature."""
    hot = Sampler(MODEL).generate(["The future of AI is"], {"temperature": 2.0, "logprobs": 3, "seed": 1,
                                                             "max_tokens": 1})
    cold = Sampler(MODEL).generate(["The future of AI is"], {"temperature": 0.5, "logprobs": 3, "seed": 1,
                                                              "max_tokens": 1})
    top = lambda out: max(v[0] for v in out[0]["completions"][0]["logprobs"][0].values())  # noqa: E731
    assert top(cold) > top(hot)


# ---------------------------------------------------------------------- stopping
def test_stop_strings_truncate_and_name_the_reason():
    stops = [".", " and"]
    wl = workload(EXAMPLE, {"temperature": 0.0, "max_tokens": 32, "stop": stops})
    results = run(wl)
    check("stop", True, wl, results)
    check("lengths", True, wl, results)
    stopped = [c for c in completions(results[0][0]) if c["finish_reason"] == "stop"]
    assert stopped, "greedy text reaches '.' or ' and' within 32 tokens for some prompt"
    full = run(workload(EXAMPLE, {"temperature": 0.0, "max_tokens": 32}))[0][0]
    for cut, whole in zip(completions(results[0][0]), completions(full)):
        assert whole["text"].startswith(cut["text"])
        if cut["finish_reason"] == "stop":
            assert cut["stop_reason"] in stops
            assert whole["text"][len(cut["text"]):].startswith(cut["stop_reason"])
            assert cut["token_ids"] == whole["token_ids"][:len(cut["token_ids"])]


def test_include_stop_str_in_output_keeps_it():
    wl = workload(EXAMPLE, {"temperature": 0.0, "max_tokens": 32, "stop": ["."], "include_stop_str_in_output": True})
    stopped = [c for c in completions(run(wl)[0][0]) if c["finish_reason"] == "stop"]
    assert stopped and all(c["text"].endswith(".") and c["stop_reason"] == "." for c in stopped)


def test_stop_token_ids_stop_with_the_token_as_reason():
    period = encode(".")[0]
    wl = workload(EXAMPLE, {"temperature": 0.0, "max_tokens": 32, "stop_token_ids": [period]})
    results = run(wl)
    check("stop", True, wl, results)
    stopped = [c for c in completions(results[0][0]) if c["finish_reason"] == "stop"]
    assert stopped
    for c in stopped:
        assert c["stop_reason"] == period and c["token_ids"][-1] == period
        assert not c["text"].endswith("."), "the stop token's text is left out"


def test_bad_words_are_never_emitted():
    plain = run(workload(EXAMPLE, {"temperature": 0.0, "max_tokens": 24}))[0][0]
    counts: dict[int, int] = {}
    for comp in completions(plain):
        for t in comp["token_ids"]:
            counts[t] = counts.get(t, 0) + 1
    favourite = VOCAB[max((t for t in counts if VOCAB[t].startswith(" ")), key=counts.get)]
    wl = workload(EXAMPLE, {"temperature": 0.0, "max_tokens": 24, "bad_words": [favourite]},
                  {"temperature": 1.0, "seed": 5, "max_tokens": 24, "bad_words": [favourite.strip(), " of"]})
    results = run(wl)
    check("bad_words", True, wl, results)
    check("lengths", True, wl, results)
    banned = {encode(favourite)[0], encode(" of")[0]}
    assert not banned & {t for comp in completions(results[1][0]) for t in comp["token_ids"]}
    assert results[0][0] != plain


def test_multi_word_bad_words_ban_only_the_sequence():
    plain = Sampler(MODEL).generate(EXAMPLE, {"temperature": 0.0, "max_tokens": 24})
    texts = [c["text"] for c in completions(plain)]
    ids = [c["token_ids"] for c in completions(plain)]
    words = [(a, b) for seq in ids for a, b in zip(seq, seq[1:]) if VOCAB[a][0] == VOCAB[b][0] == " "]
    pair = words[0]
    phrase = VOCAB[pair[0]] + VOCAB[pair[1]]
    assert any(phrase in t for t in texts)
    banned = Sampler(MODEL).generate(EXAMPLE, {"temperature": 0.0, "max_tokens": 24, "bad_words": [phrase]})
    assert not any(phrase in c["text"] for c in completions(banned))


def test_min_tokens_and_ignore_eos_lengths():
    eos_first = {"temperature": 0.0, "max_tokens": 20, "logit_bias": {str(EOS_ID): 50.0}}
    wl = workload(SHORT, eos_first, {**eos_first, "min_tokens": 10}, {**eos_first, "ignore_eos": True},
                  {"temperature": 0.0, "max_tokens": 20, "min_tokens": 10})
    results = run(wl)
    check("lengths", True, wl, results)
    for comp in completions(results[0][0]):  # EOS at once: one token, stopped, no text
        assert comp["token_ids"] == [EOS_ID] and comp["finish_reason"] == "stop" and comp["stop_reason"] is None
        assert comp["text"] == ""
    for comp in completions(results[1][0]):  # EOS suppressed until 10 tokens, then it comes
        assert len(comp["token_ids"]) == 11 and comp["token_ids"][-1] == EOS_ID
        assert EOS_ID not in comp["token_ids"][:-1] and comp["finish_reason"] == "stop"
    for comp in completions(results[2][0]):  # EOS is sampled but does not stop anything
        assert len(comp["token_ids"]) == 20 and comp["finish_reason"] == "length"


def test_max_model_len_caps_the_sequence():
    prompt = "Hello, my name is"  # five tokens
    [out] = Sampler(MODEL, max_model_len=12).generate([prompt], {"temperature": 0.0, "max_tokens": None,
                                                                 "ignore_eos": True})
    comp = out["completions"][0]
    assert len(comp["token_ids"]) == 12 - len(encode(prompt)) and comp["finish_reason"] == "length"


def test_eos_is_rare_but_possible():
    outs = Sampler(MODEL).generate(EXAMPLE, {"temperature": 1.0, "seed": 11, "max_tokens": 200, "n": 4})
    lengths = [len(c["token_ids"]) for c in completions(outs)]
    assert any(n < 200 for n in lengths), "sampling reaches EOS sometimes"
    assert sum(lengths) / len(lengths) > 20, "but not often"


def test_penalties_change_greedy_output():
    wl = workload(EXAMPLE, {"temperature": 0.0, "max_tokens": 32},
                  {"temperature": 0.0, "max_tokens": 32, "repetition_penalty": 1.5,
                   "presence_penalty": 1.0, "frequency_penalty": 0.5},
                  {"temperature": 0.0, "max_tokens": 32, "presence_penalty": 1.5},
                  {"temperature": 0.0, "max_tokens": 32, "frequency_penalty": 1.0},
                  {"temperature": 0.0, "max_tokens": 32, "repetition_penalty": 2.0})
    results = run(wl)
    check("distinct", [[0, 1], [0, 2], [0, 3], [0, 4]], wl, results)
    check("lengths", True, wl, results)

    def repeats(outputs):
        return sum(len(c["token_ids"]) - len(set(c["token_ids"])) for c in completions(outputs))

    assert repeats(results[2][0]) < repeats(results[0][0]), "a presence penalty repeats less"


def test_n_completions():
    wl = workload(SHORT, {"temperature": 1.0, "n": 3, "seed": 0, "max_tokens": 16},
                  {"temperature": 1.0, "n": 2, "max_tokens": 16}, runs=2)
    results = run(wl)
    check("n_completions", True, wl, results)
    check("lengths", True, wl, results)
    check("identical_runs", [0], wl, results)  # seeded: child i uses seed + i, every time
    for out in results[0][0]:
        texts = [c["token_ids"] for c in out["completions"]]
        assert len({tuple(t) for t in texts}) == 3, "the n children are different samples"


def test_allowed_token_ids_and_logit_bias():
    allowed = [encode(w)[0] for w in (" cat", " dog", " bird")]
    [out] = Sampler(MODEL).generate(["Hello"], {"temperature": 1.0, "seed": 2, "max_tokens": 12,
                                                "allowed_token_ids": allowed})
    assert set(out["completions"][0]["token_ids"]) <= set(allowed)
    cat = encode(" cat")[0]
    [out] = Sampler(MODEL).generate(["Hello"], {"temperature": 0.0, "max_tokens": 5, "logit_bias": {cat: 100}})
    assert out["completions"][0]["text"] == " cat" * 5


# ---------------------------------------------------------------------- argument checks
@pytest.mark.parametrize("raw, error, text", [
    ({"temprature": 0.5}, TypeError, "unexpected keyword argument 'temprature'"),
    ({"min_tokens": 20, "max_tokens": 10}, ValueError, "min_tokens must be less than or equal to max_tokens=10"),
    ({"top_p": 0.0}, ValueError, r"top_p must be in \(0, 1\]"),
    ({"temperature": -1}, ValueError, "temperature must be non-negative"),
    ({"n": 0}, ValueError, "n must be at least 1"),
    ({"top_k": -2}, ValueError, "top_k must be 0"),
    ({"stop": ["."], "detokenize": False}, ValueError, "stop strings are only supported when detokenize is True"),
    ({"logit_bias": {"99999": 1.0}}, ValueError, "out-of-vocab"),
])
def test_invalid_sampling_params_are_refused(raw, error, text):
    with pytest.raises(error, match=text):
        SamplingParams.from_dict(raw)


def test_defaults_match_vllm():
    sp = SamplingParams.from_dict({})
    assert (sp.n, sp.temperature, sp.top_p, sp.top_k, sp.min_p) == (1, 1.0, 1.0, 0, 0.0)
    assert (sp.max_tokens, sp.min_tokens, sp.seed, sp.logprobs) == (16, 0, None, None)
    assert SamplingParams.from_dict({"top_k": -1, "stop": "x"}).top_k == 0
    assert SamplingParams.from_dict({"stop": "x"}).stop == ["x"]
