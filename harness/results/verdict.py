"""The verdict: does each candidate variant remove the baseline's VRAM construction failures?

Per candidate, every condition that holds is found, and the worst one wins:
regression > fix insufficient > not proven > not reproduced > fix confirmed. The run's verdict is the worst
over candidates. With repeats, cases are grouped by step (``step[r]`` → ``step``) and a fix is
only confirmed when Fisher's exact test says the drop in VRAM failures is significant.

A step that failed for VRAM in the baseline counts as fixed only when it passed with the fix and
built an engine doing so: a test that returns before building anything (an environment switch, a
skip) is no evidence, and a verdict left without evidence is `not proven` (exit 1).

No verdict passes while a run is incomplete, or while a variant did not run its steps (its worker never started, or stopped
early): a candidate that did not run is `fix insufficient`, and a baseline that did not run makes
the run's exit code 1 whatever its verdict.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field, replace

from harness.results import gate, stats
from harness.results.diff import DiffResult, Transition, diff
from harness.results.junitread import Case
from harness.model import NEVER_STARTED, NOT_RUN, FailureClass, Outcome, Verdict

ALPHA = 0.05
RANK = {Verdict.FIX_CONFIRMED: 0, Verdict.NOT_REPRODUCED: 1, Verdict.NOT_PROVEN: 2, Verdict.BASELINE_BROKEN: 3,
        Verdict.FIX_INSUFFICIENT: 4, Verdict.REGRESSION: 5}
VRAM = FailureClass.VRAM_CONSTRUCTION
_REPEAT_SUFFIX = re.compile(r"\[\d+\]$")

Key = tuple[str, str]  # (classname, step)


@dataclass
class StepCell:
    """One step of one variant, over its repeats."""

    case: Case  # the repeats folded into one case: failed if any repeat failed
    runs: int  # repeats that ran (not skipped)
    failed: int
    vram: stats.Rate  # VRAM construction failures per run, with a Wilson interval


@dataclass
class StepRow:
    key: Key
    cells: dict[str, StepCell] = field(default_factory=dict)  # variant -> cell; absent: never ran

    @property
    def step(self) -> str:
        return self.key[1]


@dataclass
class CandidateResult:
    variant: str
    verdict: Verdict
    reasons: list[str]  # the deciding reason first, then any other condition that holds
    diff: DiffResult  # per step, baseline → this candidate
    vram_failures: int
    regressions: list[str]
    fisher_p: float | None = None  # only with repeats > 1
    not_allowed: list[str] = field(default_factory=list)  # "step (class)": failures --allow did not accept

    @property
    def exit_code(self) -> int:
        return self.verdict.exit_code or (1 if self.not_allowed else 0)


@dataclass
class VerdictReport:
    verdict: Verdict
    baseline: str
    repeats: int
    incomplete: bool
    reasons: list[str]
    candidates: dict[str, CandidateResult]
    counts: dict[str, dict]  # variant -> {"cases", "passed", "failed", "skipped", "classes": {...}}
    steps: list[StepRow]
    pooled: dict[str, stats.Rate]  # variant -> VRAM failures over all cases that ran
    allow: frozenset = frozenset()  # failure classes --allow accepted
    unrun: dict[str, int] = field(default_factory=dict)  # variant -> steps its broken worker never ran

    @property
    def exit_code(self) -> int:
        """0 only when the verdict holds, no candidate failed for a reason that was not allowed,
        every variant ran its steps and the run is complete (no shard or repeat missing)."""
        return max([self.verdict.exit_code, *(c.exit_code for c in self.candidates.values()),
                    1 if self.unrun or self.incomplete else 0])


def step_of(name: str, repeats: int) -> str:
    """``step[3]`` → ``step`` when the run repeated; otherwise the name may be pytest's ``test[param]``."""
    return _REPEAT_SUFFIX.sub("", name) if repeats > 1 else name


def evaluate(variants: dict[str, list[Case]], baseline: str, repeats: int,
             incomplete: bool = False, alpha: float = ALPHA, allow: frozenset = frozenset()) -> VerdictReport:
    """``alpha``: the level of Fisher's test; an early-stopped run passes its last look's level.
    ``allow``: failure classes (besides the leak) that neither fail the run nor break the baseline."""
    grouped = {v: _group(cases, repeats) for v, cases in variants.items()}
    base_groups = grouped.get(baseline, {})
    broken = _baseline_broken(baseline, base_groups, allow)
    candidates = {v: _judge(v, baseline, base_groups, groups, repeats, alpha, broken, allow)
                  for v, groups in grouped.items() if v != baseline}

    reasons = []
    unrun = {v: len(_unrun(cases)) for v, cases in variants.items() if _unrun(cases)}
    for v, n in unrun.items():
        reasons.append(f"variant {v!r} did not run {n} of its steps (its worker did not start or stopped "
                       "early; see its log): no verdict can pass on steps that never ran")
    if incomplete:
        reasons.append("run incomplete (interrupted, or shards missing): the verdict covers only the steps that ran")
    if baseline not in variants:
        reasons.append(f"baseline {baseline!r} has no results")
    if candidates:
        verdict = max((c.verdict for c in candidates.values()), key=RANK.__getitem__)
        reasons += [r for c in candidates.values() for r in c.reasons]
    elif broken:
        verdict = Verdict.BASELINE_BROKEN
        reasons.append(f"{baseline}: {verdict}: {broken}")
    else:
        verdict = Verdict.NOT_REPRODUCED
        reasons.append(f"no variant besides the baseline {baseline!r}: nothing to compare, the run proves nothing")
    return VerdictReport(
        verdict=verdict, baseline=baseline, repeats=repeats, incomplete=incomplete, reasons=reasons,
        candidates=candidates, counts={v: _counts(cases) for v, cases in variants.items()},
        steps=_rows(grouped, baseline), pooled={v: _pooled(cases) for v, cases in variants.items()},
        allow=frozenset(allow), unrun=unrun,
    )


def _unrun(cases: list[Case]) -> list[Case]:
    """The cases a broken worker never ran, as results/events.py marks them."""
    return [c for c in cases if c.message.startswith((NOT_RUN, NEVER_STARTED))]


def _baseline_broken(baseline: str, base: dict[Key, list[Case]], allow: frozenset) -> str:
    """Why the baseline is broken (it failed for other reasons than the leak, and never for the
    leak), or "" when it is not."""
    if any(c.vram_failure for cs in base.values() for c in cs):
        return ""
    other = gate.not_allowed(base, allow)
    if not other:
        return ""
    return (f"baseline {baseline!r} failed for reasons other than the leak: "
            + _names((k[0], f"{k[1]} ({how})") for k, how in other)
            + " - fix the scenario, or accept such failures with --allow CLASS")


def _group(cases: list[Case], repeats: int) -> dict[Key, list[Case]]:
    groups: dict[Key, list[Case]] = {}
    for c in cases:
        groups.setdefault((c.classname, step_of(c.name, repeats)), []).append(c)
    return groups


def _fold(key: Key, cases: list[Case]) -> Case:
    """One case standing for all repeats of a step: failed if any failed, skipped if all skipped."""
    failed = [c for c in cases if c.failed]
    ran = [c for c in cases if c.outcome is not Outcome.SKIPPED]
    if failed:
        cls = Counter(c.failure_class for c in failed).most_common(1)[0][0]
        first = failed[0]
        return replace(first, classname=key[0], name=key[1], failure_class=cls,
                       time=sum(c.time for c in ran) / len(ran))
    base = ran[0] if ran else cases[0]
    time = sum(c.time for c in ran) / len(ran) if ran else 0.0
    return replace(base, classname=key[0], name=key[1], time=time)


def _cell(key: Key, cases: list[Case]) -> StepCell:
    runs = sum(c.outcome is not Outcome.SKIPPED for c in cases)
    return StepCell(_fold(key, cases), runs, sum(c.failed for c in cases),
                    stats.rate(sum(c.vram_failure for c in cases), runs))


def _rows(grouped: dict[str, dict[Key, list[Case]]], baseline: str) -> list[StepRow]:
    order = [baseline] + [v for v in grouped if v != baseline]
    rows: dict[Key, StepRow] = {}
    for v in order:
        for key, cases in grouped.get(v, {}).items():
            rows.setdefault(key, StepRow(key)).cells[v] = _cell(key, cases)
    return list(rows.values())


def _pooled(cases: list[Case]) -> stats.Rate:
    ran = [c for c in cases if c.outcome is not Outcome.SKIPPED]
    return stats.rate(sum(c.vram_failure for c in ran), len(ran))


def _counts(cases: list[Case]) -> dict:
    outcomes = Counter(c.outcome for c in cases)
    classes = Counter(c.failure_class for c in cases if c.failed)
    return {"cases": len(cases), **{o.value: outcomes[o] for o in Outcome},
            "classes": {fc.value: classes[fc] for fc in FailureClass if fc is not FailureClass.NONE}}


def _names(keys, limit: int = 5) -> str:
    keys = list(keys)
    shown = ", ".join(k[1] for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _how_not_passed(cases: list[Case]) -> str | None:
    """None when every repeat that ran passed (and one did); else the failure class, or "skipped"."""
    failed = [c for c in cases if c.failed]
    if failed:
        return str(Counter(c.failure_class for c in failed).most_common(1)[0][0])
    return None if any(c.outcome is Outcome.PASSED for c in cases) else "skipped"


def _judge(name: str, baseline: str, base: dict[Key, list[Case]], cand: dict[Key, list[Case]],
           repeats: int, alpha: float = ALPHA, broken: str = "", allow: frozenset = frozenset()) -> CandidateResult:
    d = diff([_fold(k, cs) for k, cs in base.items()], [_fold(k, cs) for k, cs in cand.items()],
             baseline, name)
    regressions = d.of(Transition.REGRESSION)
    base_vram_steps = [k for k, cs in base.items() if any(c.vram_failure for c in cs)]
    cand_vram_steps = [k for k, cs in cand.items() if any(c.vram_failure for c in cs)]
    base_vram = sum(c.vram_failure for cs in base.values() for c in cs)
    cand_vram = sum(c.vram_failure for cs in cand.values() for c in cs)
    compared = [k for k in base_vram_steps if any(c.outcome is not Outcome.SKIPPED for c in cand.get(k, []))]
    # a step the leak broke counts as fixed only if it passes with the fix: one that now times out,
    # crashes or never ran (skipped after such a failure) is no evidence that the memory came back
    how_not_passed = [(k, _how_not_passed(cand.get(k, []))) for k in base_vram_steps]
    unproven = [(k, how) for k, how in how_not_passed if how and how != str(VRAM)]
    no_engine = [k for k, how in how_not_passed if how is None
                 and not any(c.engines_built != 0 for c in cand[k] if c.outcome is Outcome.PASSED)]

    p = None
    if repeats > 1:
        b = _pooled([c for cs in base.values() for c in cs])
        c = _pooled([c for cs in cand.values() for c in cs])
        p = stats.fisher_exact([[b.k, b.n - b.k], [c.k, c.n - c.k]])
        counts = f"VRAM failures {b.k}/{b.n} vs {c.k}/{c.n}, Fisher p={p:.3g}"
        if alpha != ALPHA:
            counts += f", level {alpha:.3g} after early-stopping looks"

    holds: dict[Verdict, str] = {}
    if regressions:
        holds[Verdict.REGRESSION] = (
            f"{len(regressions)} step(s) pass in {baseline!r} but fail here: "
            + _names((r.key[0], f"{r.key[1]} ({r.candidate.failure_class})") for r in regressions))
    if cand_vram:
        holds[Verdict.FIX_INSUFFICIENT] = (
            f"{cand_vram} vram_construction failure(s) remain: {_names(cand_vram_steps)}")
    if unproven and compared:
        holds.setdefault(Verdict.FIX_INSUFFICIENT, (
            f"{len(unproven)} step(s) that failed for VRAM in {baseline!r} do not pass here: "
            + _names((k[0], f"{k[1]} ({how})") for k, how in unproven)))
    unrun = _unrun([c for cs in cand.values() for c in cs])
    if unrun:
        holds.setdefault(Verdict.FIX_INSUFFICIENT, (
            f"{len(unrun)} step(s) never ran here (the worker did not start or stopped early): "
            + _names((c.classname, c.name) for c in unrun)))
    if no_engine:
        holds[Verdict.NOT_PROVEN] = (
            f"{len(no_engine)} step(s) that failed for VRAM in {baseline!r} passed here without building an "
            f"engine, which says nothing about the memory: {_names(no_engine)}")
    if not base_vram and broken:
        holds[Verdict.BASELINE_BROKEN] = broken
    elif not base_vram:
        ran = "ran no step" if not any(base.values()) else "had no vram_construction failure"
        holds[Verdict.NOT_REPRODUCED] = (
            f"baseline {baseline!r} {ran}, so the failure was not reproduced and the comparison proves nothing")
    elif not compared:
        holds[Verdict.NOT_PROVEN] = (
            f"none of the steps that failed for VRAM in {baseline!r} ran here ({_names(base_vram_steps)}): "
            "the comparison proves nothing")
    elif p is not None and p >= alpha and Verdict.FIX_INSUFFICIENT not in holds:
        # (with a VRAM failure left, significance is moot: saying both would contradict itself)
        holds[Verdict.NOT_REPRODUCED] = f"difference not significant ({counts})"

    if holds:
        ranked = sorted(holds, key=RANK.__getitem__, reverse=True)
        verdict, reasons = ranked[0], [f"{name}: {v}: {holds[v]}" for v in ranked]
    else:
        verdict = Verdict.FIX_CONFIRMED
        why = (f"{baseline!r} had {base_vram} vram_construction failure(s) ({_names(base_vram_steps)}); "
               f"{name!r} has none and no step regressed")
        reasons = [f"{name}: {verdict}: {why}" + (f" ({counts})" if p is not None else "")]
    said = {r.key for r in regressions} | {k for k, _ in unproven} | set(no_engine)  # named by a reason above
    other = [(k, how) for k, how in gate.not_allowed(cand, allow) if k not in said]
    if other:
        reasons.append(f"{name}: {len(other)} step(s) failed for reasons other than the leak, not allowed "
                       f"(exit 1; --allow CLASS accepts them): " + _names((k[0], f"{k[1]} ({how})") for k, how in other))
    return CandidateResult(name, verdict, reasons, d, cand_vram, [r.key[1] for r in regressions], p,
                           [f"{k[1]} ({how})" for k, how in other])
