"""Expectations: real checks on an engine's outputs, covering what vLLM's sampler suite tests.

A workload's results are ``results[sampling_index][run_index]`` = one normalised output per prompt
(see docs/architecture.md). Each check returns a list of failures (empty when it holds), each saying
what it saw. Standard library only: this runs in the worker.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import combinations
from typing import Any, Callable

from harness.scenario import specs

Results = list[list[list[dict]]]


@dataclass(frozen=True)
class Check:
    run: Callable[[Any, Results, Any], list[str]]
    validate: Callable[[Any, Any], str | None]
    doc: str


def _completions(outputs: list[dict]):
    for p, out in enumerate(outputs):
        for c, comp in enumerate(out["completions"]):
            yield p, c, comp


def _tokens(outputs: list[dict]) -> list[list[int]]:
    return [list(comp["token_ids"]) for _, _, comp in _completions(outputs)]


def _short(tokens: list[int], n: int = 12) -> str:
    return str(tokens[:n])[:-1] + (", ...]" if len(tokens) > n else "]")


def _shown(outputs: list[dict], k: int) -> str:
    """Completion ``k``'s token ids with its decoded text beside them: ids alone tell a reader nothing."""
    comp = [c for _, _, c in _completions(outputs)][k]
    text = comp.get("text") or ""
    return f"{_short(comp['token_ids'])} {text[:60]!r}" + ("…" if len(text) > 60 else "")


def _indices(arg: Any, results: Results) -> list[int]:
    return list(range(len(results))) if arg is True else list(arg)


def _first_difference(a: list, b: list) -> int | None:
    """The index of the first completion whose tokens differ between two outputs, or None."""
    return next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), None)


# --------------------------------------------------------------------------- checks
def identical_runs(arg: Any, results: Results, workload: Any) -> list[str]:
    """Every run of a sampling set gives the same tokens (greedy, or seeded sampling)."""
    fails = []
    for i in _indices(arg, results):
        first = _tokens(results[i][0])
        for r, run in enumerate(results[i][1:], start=1):
            k = _first_difference(first, _tokens(run))
            if k is not None:
                fails.append(f"sampling[{i}] completion {k}: run 0 gave {_shown(results[i][0], k)}, "
                             f"run {r} gave {_shown(run, k)}")
    return fails


def distinct(arg: Any, results: Results, workload: Any) -> list[str]:
    """The named sampling sets give different outputs (different seeds; penalties on vs off)."""
    pairs = list(combinations(range(len(results)), 2)) if arg is True else [tuple(p) for p in arg]
    fails = []
    for i, j in pairs:
        if _tokens(results[i][0]) == _tokens(results[j][0]):
            fails.append(f"sampling[{i}] and sampling[{j}] gave identical outputs, "
                         f"e.g. {_shown(results[i][0], 0)}")
    return fails


def same_output(arg: Any, results: Results, workload: Any) -> list[str]:
    """The named sampling sets give identical outputs (top_k=1 is greedy; a seed fixes sampling)."""
    fails = []
    for i, j in [tuple(p) for p in arg]:
        k = _first_difference(_tokens(results[i][0]), _tokens(results[j][0]))
        if k is not None:
            fails.append(f"sampling[{i}] and sampling[{j}] differ at completion {k}: "
                         f"{_shown(results[i][0], k)} vs {_shown(results[j][0], k)}")
    return fails


def logprobs(arg: Any, results: Results, workload: Any) -> list[str]:
    """The number of returned logprobs is right, and the sampled token's rank is 1 for greedy
    and within top_k when top_k is set."""
    fails = []
    for i in _indices(arg, results):
        sp = workload.sampling[i]
        k = sp.get("logprobs")
        if k is None:
            continue
        greedy = sp.get("temperature", 1.0) == 0
        top_k = sp.get("top_k", -1) or -1
        for p, c, comp in _completions(results[i][0]):
            lps = comp.get("logprobs") or []
            if len(lps) != len(comp["token_ids"]):
                fails.append(f"sampling[{i}] prompt {p}: {len(lps)} logprob entries for {len(comp['token_ids'])} tokens")
                continue
            for pos, (tok, entry) in enumerate(zip(comp["token_ids"], lps)):
                entry = {int(t): v for t, v in entry.items()}
                if not k <= len(entry) <= k + 1:
                    fails.append(f"sampling[{i}] prompt {p} token {pos}: {len(entry)} logprobs, asked for {k}")
                    break
                if tok not in entry:
                    fails.append(f"sampling[{i}] prompt {p} token {pos}: sampled token {tok} has no logprob")
                    break
                rank = entry[tok][1]
                if greedy and rank != 1:
                    fails.append(f"sampling[{i}] prompt {p} token {pos}: greedy token has rank {rank}")
                    break
                if not greedy and top_k > 0 and rank > top_k:
                    fails.append(f"sampling[{i}] prompt {p} token {pos}: rank {rank} > top_k {top_k}")
                    break
    return fails


def lengths(arg: Any, results: Results, workload: Any) -> list[str]:
    """max_tokens, min_tokens and ignore_eos are respected."""
    fails = []
    for i in _indices(arg, results):
        sp = workload.sampling[i]
        max_t, min_t = sp.get("max_tokens", 16), sp.get("min_tokens", 0)
        for p, c, comp in _completions(results[i][0]):
            n = len(comp["token_ids"])
            if n > max_t:
                fails.append(f"sampling[{i}] prompt {p}: {n} tokens > max_tokens {max_t}")
            stopped_by_string = comp["finish_reason"] == "stop" and isinstance(comp.get("stop_reason"), str)
            if n < min_t and not stopped_by_string:
                fails.append(f"sampling[{i}] prompt {p}: {n} tokens < min_tokens {min_t}")
            if sp.get("ignore_eos") and not sp.get("stop") and not sp.get("stop_token_ids") and n != max_t:
                fails.append(f"sampling[{i}] prompt {p}: ignore_eos but {n} tokens != max_tokens {max_t} "
                             f"(finish_reason={comp['finish_reason']})")
    return fails


def stop(arg: Any, results: Results, workload: Any) -> list[str]:
    """Stop strings end the text and are not in it; stop_reason names what stopped it."""
    fails = []
    for i in _indices(arg, results):
        sp = workload.sampling[i]
        stops = [sp["stop"]] if isinstance(sp.get("stop"), str) else list(sp.get("stop") or [])
        stop_ids = list(sp.get("stop_token_ids") or [])
        if not stops and not stop_ids:
            continue
        for p, c, comp in _completions(results[i][0]):
            if not sp.get("include_stop_str_in_output"):
                for s in stops:
                    if s in comp["text"]:
                        fails.append(f"sampling[{i}] prompt {p}: stop string {s!r} in output {comp['text'][:60]!r}")
            reason = comp.get("stop_reason")
            if comp["finish_reason"] == "stop" and reason is not None and reason not in stops + stop_ids:
                fails.append(f"sampling[{i}] prompt {p}: stop_reason {reason!r} is not one of {stops + stop_ids}")
    return fails


def bad_words(arg: Any, results: Results, workload: Any) -> list[str]:
    """No banned word appears as a word in the output."""
    fails = []
    for i in _indices(arg, results):
        words = workload.sampling[i].get("bad_words") or []
        for p, c, comp in _completions(results[i][0]):
            for w in words:
                if re.search(rf"(?<!\w){re.escape(w.strip())}(?!\w)", comp["text"]):
                    fails.append(f"sampling[{i}] prompt {p}: banned word {w!r} in {comp['text'][:60]!r}")
    return fails


def n_completions(arg: Any, results: Results, workload: Any) -> list[str]:
    """Each prompt gets `n` completions."""
    fails = []
    for i in _indices(arg, results):
        n = workload.sampling[i].get("n", 1)
        for p, out in enumerate(results[i][0]):
            if len(out["completions"]) != n:
                fails.append(f"sampling[{i}] prompt {p}: {len(out['completions'])} completions, expected n={n}")
    return fails


def nonempty(arg: Any, results: Results, workload: Any) -> list[str]:
    """Every completion has at least one token."""
    return [f"sampling[{i}] prompt {p} completion {c}: no tokens"
            for i in _indices(arg, results) for p, c, comp in _completions(results[i][0]) if not comp["token_ids"]]


_RUN = {"identical_runs": identical_runs, "distinct": distinct, "same_output": same_output, "logprobs": logprobs,
        "lengths": lengths, "stop": stop, "bad_words": bad_words, "n_completions": n_completions,
        "nonempty": nonempty}
#: every check a scenario may name (scenario/specs.py), with its code
CHECKS: dict[str, Check] = {name: Check(_RUN[name], validate, _RUN[name].__doc__)
                            for name, validate in specs.CHECKS.items()}


def evaluate(expectations: dict[str, Any], results: Results, workload: Any) -> list[tuple[str, bool, str]]:
    """Run every expectation; (name, ok, what was seen)."""
    out = []
    for name, arg in expectations.items():
        fails = CHECKS[name].run(arg, results, workload)
        out.append((name, not fails, "; ".join(fails[:5]) + (f" (+{len(fails) - 5} more)" if len(fails) > 5 else "")))
    return out
