"""Real sampling over seeded pseudo-random logits, with vLLM's SamplingParams semantics.

The "model" is a fixed vocabulary of word tokens whose logits are a deterministic function of
(model name, prompt, tokens so far): a Zipf-like prior over the words (common words are likely, so
greedy text repeats itself and penalties visibly change it), a small per-model perturbation, and
gaussian noise drawn from a hash of the context. Everything after the logits is done the way vLLM's
v1 sampler does it, in its order:

    allowed_token_ids -> bad_words -> min_tokens -> logit_bias -> penalties
    -> greedy (argmax) | temperature -> min_p -> top_k -> top_p -> draw from the request's generator

Stop handling follows vLLM's scheduler and detokenizer: min_tokens first, then EOS (unless
ignore_eos), stop_token_ids, stop strings (text truncated before the string unless
include_stop_str_in_output), and max_tokens. Logprobs are those of the processed distribution after
temperature (before truncation by top-k/top-p/min-p), so the greedy token always has rank 1.

Output is the normalised form of docs/architecture.md. Standard library only.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from dataclasses import dataclass, field, fields
from functools import lru_cache
from typing import Any

# ---------------------------------------------------------------------- vocabulary
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
SPECIAL = ("<unk>", "<s>", "</s>")

# Roughly by frequency in English text: the order is the prior's rank.
_WORDS = """
the , . of and to a in is that for it as was with be by on not he this are or his from at which
but have an had they you were their one all we can her has there been if more when will would who
so no she other its may these about than into them time only some could new out two also first
any like over such our what up then do my now made after most many before must people through
back years where much your way well down should because each just those how too little state good
very make world still own see men work long get here between both life being under never day same
another know while last might us great old year off come since against go came right used take
three small found part house world system large city even set day water place thing point group
home light night hand word number story robot dream machine model data engine memory device
network neural learning intelligence human history future question answer idea power energy
paper music art painting culture economy market business change growth
""".split()
_EXTRA = """
cat dog bird worm tree river mountain sea sky sun moon star road car train ship book letter name
france paris capital country language english japanese french swahili early late fast slow high
low deep simple complex open free real true false best better strong weak bright dark quiet loud
red blue green white black young big warm cold clear full empty short whole
""".split()


def _vocabulary() -> tuple[str, ...]:
    words: list[str] = []
    for w in _WORDS + _EXTRA:
        text = w if w in (",", ".") else " " + w
        if text not in words:
            words.append(text)
    return (*SPECIAL, *words)


#: id -> text. Word tokens carry their leading space (" the"); "," and "." do not.
VOCAB: tuple[str, ...] = _vocabulary()
TOKEN_IDS: dict[str, int] = {t: i for i, t in enumerate(VOCAB)}
_PIECE = re.compile(r"\s*[\w']+|\s*[^\w\s]")


def encode(text: str) -> list[int]:
    """Text -> token ids. A word not in the vocabulary is <unk> (the case matters: " The" is unknown)."""
    ids = []
    for piece in _PIECE.findall(text):
        if piece[:1].isspace():
            piece = " " + piece.lstrip()
        ids.append(TOKEN_IDS.get(piece, UNK_ID))
    return ids


def decode(ids: list[int], skip_special_tokens: bool = True) -> str:
    return "".join(VOCAB[i] for i in ids if not (skip_special_tokens and i < len(SPECIAL)))


# ---------------------------------------------------------------------- the "model"
_ZIPF = 1.0      # prior logit of the word of rank r: -_ZIPF * ln(r + 1)
_MODEL_SD = 0.5  # per-model perturbation of the prior
_NOISE_SD = 1.4  # per-context noise: enough for greedy to vary between the common words
_EOS_RANK = 30   # EOS is as likely as the 30th word: rare, but sampling reaches it
_NEVER = -30.0   # <unk> and <s>: finite (logprobs stay finite) but never chosen in practice


@lru_cache(maxsize=64)
def _prior(model: str) -> tuple[float, ...]:
    rng = random.Random(f"sim-model:{model}")
    prior = [_NEVER, _NEVER, -_ZIPF * math.log(_EOS_RANK + 1)]
    prior += [-_ZIPF * math.log(r + 1) + rng.gauss(0.0, _MODEL_SD) for r in range(len(VOCAB) - len(SPECIAL))]
    return tuple(prior)


class _Context:
    """Logits as a function of (model, prompt, tokens so far), through a running hash, so a step
    costs the same however long the sequence is."""

    def __init__(self, model: str, prompt: str):
        self._prior = _prior(model)
        self._digest = hashlib.blake2b(f"{model}\0{prompt}".encode(), digest_size=16).digest()

    def push(self, token_id: int) -> None:
        self._digest = hashlib.blake2b(self._digest + token_id.to_bytes(4, "little"), digest_size=16).digest()

    def logits(self) -> list[float]:
        rng = random.Random(int.from_bytes(self._digest, "little"))
        return [p + rng.gauss(0.0, _NOISE_SD) for p in self._prior]


# ---------------------------------------------------------------------- SamplingParams
_EPS = 1e-5  # vLLM's _SAMPLING_EPS: a temperature below it is greedy
NEG_INF = float("-inf")


@dataclass
class SamplingParams:
    """The vllm.SamplingParams fields the simulated engine understands (harness.scenario.schema.SAMPLING_KEYS)."""

    n: int = 1
    best_of: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    bad_words: list[str] = field(default_factory=list)
    ignore_eos: bool = False
    max_tokens: int | None = 16  # None: until the context is full (max_model_len)
    min_tokens: int = 0
    logprobs: int | None = None
    prompt_logprobs: int | None = None  # accepted; the normalised output has no prompt logprobs
    detokenize: bool = True
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    logit_bias: dict[int, float] | None = None
    allowed_token_ids: list[int] | None = None

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> SamplingParams:
        known = {f.name for f in fields(cls)}
        for key in raw:
            if key not in known:
                raise TypeError(f"SamplingParams got an unexpected keyword argument '{key}'")
        params = cls(**raw)
        params._normalise()
        params._verify()
        return params

    @property
    def greedy(self) -> bool:
        return self.temperature < _EPS

    def _normalise(self) -> None:
        self.stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        self.bad_words = [self.bad_words] if isinstance(self.bad_words, str) else list(self.bad_words or [])
        self.stop_token_ids = [int(t) for t in self.stop_token_ids or []]
        self.min_tokens = self.min_tokens or 0
        if self.logit_bias is not None:  # JSON and YAML give string keys
            self.logit_bias = {int(k): max(-100.0, min(100.0, float(v))) for k, v in self.logit_bias.items()}
        if self.top_k in (None, -1):
            self.top_k = 0

    def _verify(self) -> None:
        """vLLM's own argument checks, with its wording."""
        checks = [
            (self.n >= 1, f"n must be at least 1, got {self.n}."),
            (self.best_of in (None, self.n),
             f"best_of ({self.best_of}) is not supported; it must equal n ({self.n})."),
            (-2.0 <= self.presence_penalty <= 2.0,
             f"presence_penalty must be in [-2, 2], got {self.presence_penalty}."),
            (-2.0 <= self.frequency_penalty <= 2.0,
             f"frequency_penalty must be in [-2, 2], got {self.frequency_penalty}."),
            (self.repetition_penalty > 0.0,
             f"repetition_penalty must be greater than zero, got {self.repetition_penalty}."),
            (self.temperature >= 0.0, f"temperature must be non-negative, got {self.temperature}."),
            (0.0 < self.top_p <= 1.0, f"top_p must be in (0, 1], got {self.top_p}."),
            (self.top_k >= 0, f"top_k must be 0 (disable), or at least 1, got {self.top_k}."),
            (0.0 <= self.min_p <= 1.0, f"min_p must be in [0, 1], got {self.min_p}."),
            (self.max_tokens is None or self.max_tokens >= 1, f"max_tokens must be at least 1, got {self.max_tokens}."),
            (self.min_tokens >= 0, f"min_tokens must be greater than or equal to 0, got {self.min_tokens}."),
            (self.max_tokens is None or self.min_tokens <= self.max_tokens,
             f"min_tokens must be less than or equal to max_tokens={self.max_tokens}, got {self.min_tokens}."),
            (self.logprobs is None or self.logprobs >= 0, f"logprobs must be non-negative, got {self.logprobs}."),
            (self.detokenize or not self.stop, "stop strings are only supported when detokenize is True. "
                                               "Set detokenize=True to use stop."),
            (all(s for s in self.stop), "stop cannot contain an empty string."),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        for name, ids in (("allowed_token_ids", self.allowed_token_ids or []),
                          ("logit_bias", list(self.logit_bias or {}))):
            bad = [t for t in ids if not 0 <= int(t) < len(VOCAB)]
            if bad:
                raise ValueError(f"{name} contains out-of-vocab token ids {bad} (vocabulary size {len(VOCAB)})")
        if self.allowed_token_ids is not None and not self.allowed_token_ids:
            raise ValueError("allowed_token_ids is not None and empty!")


# ---------------------------------------------------------------------- the sampler
class Sampler:
    """Generates for one engine. Requests without a seed draw from (engine seed, request counter),
    so a fresh engine replays the same sequence of unseeded requests. A sequence (prompt + output)
    ends at `max_model_len` tokens, as in vLLM."""

    def __init__(self, model: str, seed: int = 0, max_model_len: int = 2048):
        self.model = model
        self.seed = int(seed)
        self.max_model_len = int(max_model_len)
        self._requests = 0

    def generate(self, prompts: list[str], sampling: dict[str, Any] | SamplingParams) -> list[dict]:
        params = sampling if isinstance(sampling, SamplingParams) else SamplingParams.from_dict(dict(sampling))
        return [{"prompt": p, "completions": [self._complete(p, params, self._generator(params, i))
                                              for i in range(params.n)]}
                for p in prompts]

    def _generator(self, params: SamplingParams, index: int) -> random.Random:
        # vLLM gives the i-th of n child requests the seed `seed + i`; an unseeded request uses the
        # engine's generator, here (engine seed, request number).
        self._requests += 1
        if params.seed is not None:
            return random.Random(f"sim-request:{params.seed + index}")
        return random.Random(f"sim-engine:{self.seed}:{self._requests}")

    def _complete(self, prompt: str, params: SamplingParams, rng: random.Random) -> dict:
        ctx = _Context(self.model, prompt)
        prompt_ids = encode(prompt)
        limit = max(1, self.max_model_len - len(prompt_ids))
        if params.max_tokens is not None:
            limit = min(limit, params.max_tokens)
        bad_words = _bad_word_ids(params.bad_words)
        out: list[int] = []
        text = ""
        logprobs: list[dict[str, list]] | None = [] if params.logprobs is not None else None
        finish, reason = "length", None
        while True:
            logits = _process(ctx.logits(), params, prompt_ids, out, bad_words)
            token, entry = _sample(logits, params, rng)
            out.append(token)
            ctx.push(token)
            if logprobs is not None:
                logprobs.append(entry)
            stopped, reason = _stop_token(params, out)
            if not stopped or params.include_stop_str_in_output:  # a stop token's text is left out
                text, stop_string = _add_text(text, token, params, len(out), check_stops=not stopped)
                if stop_string is not None:
                    stopped, reason = True, stop_string
            if stopped:
                finish = "stop"
                break
            if len(out) >= limit:
                break
        return {"token_ids": out, "text": text, "finish_reason": finish, "stop_reason": reason,
                "logprobs": logprobs}


def _stop_token(params: SamplingParams, out: list[int]) -> tuple[bool, int | None]:
    """vLLM's check_stop for tokens: nothing stops before min_tokens; EOS stops (reason None)
    unless ignore_eos; a stop_token_id stops with itself as the reason."""
    if len(out) < params.min_tokens:
        return False, None
    last = out[-1]
    if not params.ignore_eos and last == EOS_ID:
        return True, None
    if last in params.stop_token_ids:
        return True, last
    return False, None


def _add_text(text: str, token: int, params: SamplingParams, n_out: int,
              check_stops: bool) -> tuple[str, str | None]:
    """Append the token's text, then cut it at a stop string; like vLLM's detokenizer, stop
    strings are looked for only once the output is longer than min_tokens."""
    new = decode([token], params.skip_special_tokens) if params.detokenize else ""
    text += new
    if check_stops and params.stop and n_out > params.min_tokens:
        hit = _stop_string(text, len(new), params.stop, params.include_stop_str_in_output)
        if hit is not None:
            stop, cut = hit
            return (text if cut == -1 else text[:cut]), stop
    return text, None


def _stop_string(text: str, new_chars: int, stops: list[str], include: bool) -> tuple[str, int] | None:
    """vLLM's check_stop_strings: the first stop string (in the given order) found in the newly
    added text; returns it and where to cut the text (-1: keep it all)."""
    if not new_chars:
        return None
    for stop in stops:
        index = text.find(stop, max(0, len(text) + 1 - new_chars - len(stop)))
        if index == -1:
            continue
        if include:
            index += len(stop)
            if index >= len(text):
                return stop, -1
        return stop, index
    return None


def _bad_word_ids(words: list[str]) -> list[list[int]]:
    """Each bad word as token sequences, with and without a leading space, as vLLM tokenises them.
    A sequence with an unknown token can never be generated, so it is dropped."""
    seqs = []
    for word in words:
        for prefix in ("", " "):
            ids = encode(prefix + word.lstrip())
            if ids and UNK_ID not in ids and ids not in seqs:
                seqs.append(ids)
    return seqs


# ---------------------------------------------------------------------- logits processing
def _process(logits: list[float], params: SamplingParams, prompt_ids: list[int], out: list[int],
             bad_words: list[list[int]]) -> list[float]:
    """Everything vLLM applies before the greedy/random split."""
    if params.allowed_token_ids is not None:
        allowed = set(params.allowed_token_ids)
        logits = [x if i in allowed else NEG_INF for i, x in enumerate(logits)]
    for seq in bad_words:  # ban the last token where the output ends with the rest of the word
        if len(seq) - 1 <= len(out) and (len(seq) == 1 or out[-(len(seq) - 1):] == seq[:-1]):
            logits[seq[-1]] = NEG_INF
    if len(out) < params.min_tokens:  # no stop token until min_tokens (EOS too, unless ignored)
        for t in params.stop_token_ids + ([] if params.ignore_eos else [EOS_ID]):
            if 0 <= t < len(logits):
                logits[t] = NEG_INF
    for t, bias in (params.logit_bias or {}).items():
        logits[t] += bias
    return _penalise(logits, params, prompt_ids, out)


def _penalise(logits: list[float], params: SamplingParams, prompt_ids: list[int], out: list[int]) -> list[float]:
    """vLLM's apply_penalties: repetition over prompt and output tokens (divide positive logits,
    multiply negative ones), then frequency (x count) and presence (once) over output tokens."""
    counts: dict[int, int] = {}
    for t in out:
        counts[t] = counts.get(t, 0) + 1
    rep = params.repetition_penalty
    if rep != 1.0:
        for t in set(prompt_ids) | set(counts):
            logits[t] = logits[t] / rep if logits[t] > 0 else logits[t] * rep
    for t, c in counts.items():
        logits[t] -= params.frequency_penalty * c + params.presence_penalty
    return logits


def _sample(logits: list[float], params: SamplingParams, rng: random.Random) -> tuple[int, dict[str, list]]:
    """One token, and its logprobs entry when asked for."""
    if params.greedy:
        token = max(range(len(logits)), key=lambda i: (logits[i], -i))  # first maximum, like argmax
        scaled = logits
    else:
        scaled = [x / params.temperature for x in logits]
        token = _draw(_truncate(scaled, params), rng)
    entry = _logprobs_entry(_log_softmax(scaled), token, params.logprobs) if params.logprobs is not None else {}
    return token, entry


def _truncate(logits: list[float], params: SamplingParams) -> list[float]:
    """min_p, then top_k, then top_p, as vLLM masks them (ties with the k-th value are kept)."""
    if params.min_p > 0.0:
        probs = _softmax(logits)
        floor = params.min_p * max(probs)
        logits = [x if p >= floor else NEG_INF for x, p in zip(logits, probs)]
    if 0 < params.top_k < len(logits):
        kth = sorted(logits, reverse=True)[params.top_k - 1]
        logits = [x if x >= kth else NEG_INF for x in logits]
    if params.top_p < 1.0:
        order = sorted(range(len(logits)), key=lambda i: logits[i])  # ascending, as vLLM sorts
        probs = _softmax([logits[i] for i in order])
        cumulative, cut = 0.0, set()
        for rank, (i, p) in enumerate(zip(order, probs)):
            cumulative += p
            if cumulative <= 1.0 - params.top_p and rank < len(order) - 1:  # keep at least one
                cut.add(i)
        logits = [NEG_INF if i in cut else x for i, x in enumerate(logits)]
    return logits


def _draw(logits: list[float], rng: random.Random) -> int:
    probs = _softmax(logits)
    u = rng.random()
    cumulative = 0.0
    last = 0
    for i, p in enumerate(probs):
        if p > 0.0:
            cumulative += p
            last = i
            if u < cumulative:
                return i
    return last  # rounding left u above the sum


def _logprobs_entry(logprobs: list[float], token: int, k: int) -> dict[str, list]:
    """The top-k tokens with ranks 1..k, plus the sampled token with its rank if not among them."""
    order = sorted(range(len(logprobs)), key=lambda i: (-logprobs[i], i))
    entry = {str(i): [logprobs[i], rank] for rank, i in enumerate(order[:k], start=1)}
    if str(token) not in entry:
        rank = 1 + sum(1 for lp in logprobs if lp > logprobs[token])
        entry[str(token)] = [logprobs[token], rank]
    return entry


def _softmax(logits: list[float]) -> list[float]:
    top = max(logits)
    exps = [math.exp(x - top) if x != NEG_INF else 0.0 for x in logits]
    total = sum(exps)
    return [e / total for e in exps]


def _log_softmax(logits: list[float]) -> list[float]:
    top = max(logits)
    log_total = top + math.log(sum(math.exp(x - top) for x in logits if x != NEG_INF))
    return [x - log_total if x != NEG_INF else NEG_INF for x in logits]
