"""The bisection loop: ask the search for a revision, build it, run the scenario, record the verdict.

Every verdict is written to `<out>/bisect/<key>/state.json` as soon as it is known, so running the
same command again (or the printed resume command) picks up where an interrupted bisection
stopped and never runs a revision twice. `<key>` covers what decides a verdict: the scenario file,
the variant, the predicate, the source and how revisions are installed; not the range, so a
narrower or wider range reuses the verdicts already known.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from harness import atomic, boundedread
from harness.run import runner
from harness.errors import HarnessError, InputError
from harness.bisect import search
from harness.bisect.envs import BuildFailed, digest
from harness.bisect.predicate import FailOn, Judgement, StepVerdict, run_once
from harness.bisect.sources import Revision, Source

STATE_VERSION = 1


@dataclass(frozen=True)
class Terms:
    """What the old and the new end are called (git bisect's --term-old/--term-new)."""

    old: str
    new: str
    old_flag: str  # the command-line option naming the old end
    new_flag: str

    def to_search(self, verdict: StepVerdict) -> search.Behaviour:
        if verdict is StepVerdict.SKIP:
            return search.Behaviour.SKIP
        return search.Behaviour.NEW if str(verdict) == self.new_verdict else search.Behaviour.OLD

    @property
    def new_verdict(self) -> str:
        return "good" if self.new == "fixed" else "bad"


REGRESSION = Terms("good", "bad", "--good", "--bad")  # where did the failure start?
FIX = Terms("bad", "fixed", "--bad", "--good")  # where did the failure go away?


@dataclass
class Options:
    scenario: Path
    variant: str | None
    fail_on: FailOn
    source: Source
    out: Path
    terms: Terms = REGRESSION
    resume: Callable[[Revision, Revision], str] = lambda old, new: ""  # the command for a narrower range
    steps: list[str] | None = None  # --step / -k: only these steps run (None: all)
    sets: tuple = ()  # --set PATH=VALUE (scenario/overrides.py Setting), applied to every run
    suite_args: list[str] | None = None  # a pytest suite's args: each revision's own tree is its rootdir
    announce: Callable[[str], None] = print


@dataclass
class Report:
    result: search.Result
    revisions: list[Revision]
    judgements: dict[str, Judgement]
    runs: int  # scenario runs (or build attempts) made by this invocation; cached verdicts are free
    state: Path
    terms: Terms = REGRESSION

    def rev(self, index: int | None) -> Revision | None:
        return None if index is None else self.revisions[index]

    @property
    def first_new(self) -> Revision | None:
        return self.rev(self.result.first_new)

    @property
    def last_old(self) -> Revision | None:
        return self.rev(self.result.last_old)

    @property
    def exit_code(self) -> int:
        """0: one revision found; 1: a range (skips) or the ends are not as stated; 3: no revision
        could be run at all (an infrastructure problem: no verdict)."""
        if self.result.status is search.Status.NO_VERDICT:
            return 3
        return 0 if self.result.status is search.Status.FOUND else 1


class State:
    def __init__(self, path: Path, meta: dict):
        self.path = path
        self.data = {"version": STATE_VERSION, **meta, "revisions": {}}
        if path.exists():
            data = boundedread.read(path, 64 << 20, lambda msg: InputError(f"{path}: {msg}"), "a bisect state file")
            try:
                saved = json.loads(data.decode("utf-8"))
            except ValueError as e:
                raise InputError(f"{path}: not a bisect state file ({' '.join(str(e).split())}); "
                                 "remove it to start the search afresh") from None
            revisions = saved.get("revisions") if isinstance(saved, dict) else None
            if not isinstance(revisions, dict) or not all(isinstance(v, dict) for v in revisions.values()):
                raise InputError(f"{path}: revisions: expected a mapping of revisions; remove the file to "
                                 "start the search afresh")
            self.data["revisions"] = revisions

    def get(self, rev: Revision) -> Judgement | None:
        entry = self.data["revisions"].get(rev.key)
        try:
            return Judgement.from_dict(entry) if entry else None
        except (KeyError, ValueError, TypeError):  # an entry this release cannot read: run it again
            return None

    def put(self, rev: Revision, judgement: Judgement) -> None:
        self.data["revisions"][rev.key] = {"label": rev.label, "detail": rev.detail, **judgement.to_dict(),
                                           "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_json(self.path, self.data)


def state_dir(opts: Options) -> Path:
    scenario = Path(opts.scenario)
    selection = () if opts.steps is None else (",".join(opts.steps),)  # verdicts of one selection only
    key = digest(scenario.read_bytes().decode("utf-8", "replace"), opts.variant, str(opts.fail_on),
                 opts.source.identity(), *selection, *(str(s) for s in opts.sets))
    return Path(opts.out) / "bisect" / f"{scenario.stem}-{key}"


def bisect(opts: Options) -> Report:
    say, terms = opts.announce, opts.terms
    revs = opts.source.revisions()
    if len(revs) < 2:
        raise InputError(f"nothing to bisect: the range holds {len(revs)} revision(s)")
    where = state_dir(opts)
    state = State(where / "state.json", {"scenario": str(opts.scenario), "variant": opts.variant,
                                         "fail_on": str(opts.fail_on), "source": opts.source.identity()})
    bisection = search.Bisection(len(revs))
    judgements: dict[str, Judgement] = {}
    for i, rev in enumerate(revs):  # what an earlier invocation found
        cached = state.get(rev)
        if cached is not None:
            judgements[rev.key] = cached
            bisection.record(i, terms.to_search(cached.verdict))
    say(f"bisect: {len(revs)} revisions from {revs[0]} ({terms.old}) to {revs[-1]} ({terms.new}); "
        f"at most {bisection.remaining()} runs ({len(judgements)} verdicts cached)")
    say(f"state: {state.path}")
    runs = 0
    while (i := bisection.next()) is not None:
        rev = revs[i]
        lo, hi = bisection.bounds()
        runs += 1
        say(f"[{runs}] {rev} ({i + 1} of {len(revs)}; first {terms.new} is one of {hi - lo}; "
            f"at most {bisection.remaining()} runs left)")
        try:
            judgement = try_revision(opts, rev, where)
        except KeyboardInterrupt:
            say(f"interrupted; resume: {opts.resume(revs[lo], revs[hi])}")
            raise
        state.put(rev, judgement)
        judgements[rev.key] = judgement
        bisection.record(i, terms.to_search(judgement.verdict))
        say(f"  {_word(judgement.verdict, terms)}: {judgement.reason}")
        if judgement.run_dir:
            say(f"  run: {judgement.run_dir}")
        lo, hi = bisection.bounds()
        if bisection.next() is not None:
            say(f"  resume: {opts.resume(revs[lo], revs[hi])}")
    report = Report(bisection.result(), revs, judgements, runs, state.path, terms)
    for line in summary(report):
        say(line)
    return report


def try_revision(opts: Options, rev: Revision, where: Path) -> Judgement:
    """Build `rev` (a failed build is a skip) and run the scenario with it."""
    log = where / "builds" / f"{rev.label}.log"
    try:
        python = opts.source.build(rev, log, opts.announce)
    except BuildFailed as e:
        return Judgement(StepVerdict.SKIP, f"build: {e}", log=str(e.log or log))
    tree = None
    if opts.suite_args is not None:
        try:
            tree = opts.source.tree(rev, where / "trees", opts.suite_args)
        except HarnessError as e:
            return Judgement(StepVerdict.SKIP, f"tree: {e}")
    return run_once(opts.scenario, opts.variant, opts.fail_on, where / "runs", python=str(python), steps=opts.steps,
                    run_id=f"{rev.label}-{runner.new_run_id()}", announce=lambda line: opts.announce("  " + line),
                    vllm_src=str(tree) if tree else None, checkout_ref=rev.key if tree else None, sets=opts.sets)


def _word(verdict: StepVerdict, terms: Terms) -> str:
    if verdict is StepVerdict.SKIP:
        return "skip"
    return terms.new if terms.to_search(verdict) is search.Behaviour.NEW else terms.old


def summary(report: Report) -> list[str]:
    """The closing lines: the answer, the first new revision's log, the two JUnit files to diff."""
    r, t, revs = report.result, report.terms, report.revisions

    def judged(i: int) -> Judgement | None:
        return report.judgements.get(revs[i].key)

    if r.status in (search.Status.OLD_END_IS_NEW, search.Status.NEW_END_IS_OLD):
        i, name, is_ = (0, t.old, f"{t.new} too") if r.status is search.Status.OLD_END_IS_NEW else \
            (len(revs) - 1, t.new, t.old)
        j = judged(i)
        return [f"the {name} end {revs[i]} is {is_}: nothing to bisect ({j.reason})",
                f"  {name} end JUnit: {_junit(j)}", f"  {name} end log: {j.log}"]
    if r.status is search.Status.NO_VERDICT:
        tried = [i for i in range(len(revs)) if judged(i)]
        why = judged(tried[0]).reason if tried else "nothing was run"
        return [f"no verdict: none of the {len(tried)} revision(s) tried could be run, each was skipped, "
                f"so the search names no {t.new} revision; first reason: {why}"]
    first = r.candidates[-1]  # the first revision seen to be new
    if r.status is search.Status.FOUND:
        lines = [f"first {t.new} revision: {revs[first]}", f"  log: {judged(first).log}"]
    else:
        lines = [f"the first {t.new} revision is one of {len(r.candidates)} (skipped revisions hide which): "
                 + ", ".join(str(revs[i]) for i in r.candidates)]
    lines.append(f"  last {t.old} JUnit: {_junit(judged(r.last_old))} ({revs[r.last_old]})")
    lines.append(f"  first {t.new} JUnit: {_junit(judged(first))} ({revs[first]})")
    lines += [f"  note: {revs[i]} could not be tested; taken on trust as the {t.old if i == r.last_old else t.new} "
              f"end" for i in r.unverified]
    return lines


def _junit(j: Judgement | None) -> str:
    return j.junit if j and j.junit else "(none: not run)"
