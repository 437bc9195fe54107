"""Run a scenario: every (variant, repeat) in its own worker subprocess, into a new run directory.

    results/<scenario>/<run-id>/
        run.json              what was run, where, with which substitutions (written first)
        <variant>.xml         JUnit, rewritten after every worker
        events.jsonl          every worker's events, in order
        logs/<variant>-r<N>.log / .events.jsonl / .plan.json
        report.md, summary.json, report.html (report/files.py)

The runner watches each step's wall-clock deadline through the event stream: a hung step is stopped
(the worker's whole process group), a dead worker is a `crash`, and the run goes on. Ctrl-C stops
the children, writes everything finished so far, and marks the run incomplete.
"""

from __future__ import annotations

import datetime as dt
import errno
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from harness import RUN_VERSION, __version__, atomic, backends
from harness import events as vocab
from harness.device import LEDGER_ENV
from harness.results import events
from harness.results import junit
from harness.run import earlystop
from harness.run import engineargs
from harness.run import kinds
from harness.run import plan as planning
from harness.run import preflight
from harness.run import procs
from harness.scenario import schema as scenario_mod
from harness.errors import InfrastructureError
from harness.model import EXIT_DISK_FULL, NOT_RUN, Outcome, StepResult, VariantResult
from harness.run.runid import new_run_id

class Progress(Protocol):
    """What shows a run's progress (report/console.py): every worker event, then each worker's steps."""

    def __call__(self, variant: str, repeat: int, ev: dict) -> None: ...

    def worker_done(self, variant: str, repeat: int, steps: list[StepResult]) -> None: ...


@dataclass
class RunOptions:
    out: Path = Path("results")
    backend: str | None = None
    variants: list[str] | None = None
    repeat: int | None = None
    model: str | None = None
    strict_platform: bool = False
    only: list[tuple[str, int]] | None = None  # a shard: the (variant, repeat) pairs to run
    shard: str | None = None  # "K/N", recorded in run.json (harness/shard.py)
    devices: list[int] | None = None
    run_id: str | None = None
    python: str | None = None  # run every variant with this interpreter (bisect: the revision's env)
    vllm_src: str | None = None  # a pytest suite's checkout, overriding pytest.rootdir
    checkout_ref: str | None = None  # vllm_src is this revision's tree (bisect): every variant runs it
    steps: list[str] | None = None  # only these steps, in scenario order (--step, -k); None: all
    early_stop: bool = True  # repeat: N stops once every candidate's verdict is decided (run/earlystop.py)
    allow: list[str] | None = None  # failure classes that do not fail the run (--allow), kept in run.json
    progress: Progress | None = None
    announce: Callable[[str], None] = print


@dataclass
class RunResult:
    run_dir: Path
    plan: planning.RunPlan
    variants: dict[str, list[VariantResult]] = field(default_factory=dict)
    incomplete: bool = False
    problems: list[str] = field(default_factory=list)  # a pytest suite that could not be collected


def make_run_dir(out: Path, scenario_name: str, run_id: str) -> Path:
    """Create a fresh run directory (never reusing one) and prove it is writable, before any engine."""
    run_dir = out / scenario_name / run_id
    try:
        run_dir.parent.mkdir(parents=True, exist_ok=True)  # FileExistsError here: a file is in the way
        try:
            run_dir.mkdir()
        except FileExistsError:
            raise InfrastructureError(f"{run_dir}: run directory exists already; refusing to overwrite it") from None
        (run_dir / "logs").mkdir()
        probe = run_dir / ".write-test"
        probe.write_bytes(b"\0" * 65536)  # a full disk fails here, not after an hour of engines
        probe.unlink()
    except OSError as e:
        raise InfrastructureError(f"{out}: results directory is not writable: {e.strerror or e}") from None
    return run_dir


def run(scenario: scenario_mod.Scenario | str | Path, opts: RunOptions) -> RunResult:
    """Plan and execute a scenario (its callers loaded and checked it already; a path is loaded here)."""
    if not isinstance(scenario, scenario_mod.Scenario):
        scenario = scenario_mod.load(scenario)
    return execute(plan(scenario, opts), opts)


def plan(scenario: scenario_mod.Scenario, opts: RunOptions) -> planning.RunPlan:
    """Check the scenario against this machine (preflight), then plan its workers; engine keys a
    variant's own vLLM does not know are noted on stderr."""
    preflight.check_run(scenario, Path(opts.out), opts.python, opts.model)
    rplan = planning.build(scenario, backend=opts.backend, variants=opts.variants, repeat=opts.repeat,
                           model=opts.model, strict_platform=opts.strict_platform, steps=opts.steps,
                           vllm_src=opts.vllm_src, checkout_ref=opts.checkout_ref)
    checked = engineargs.check_all(scenario, variants=[v.name for v in rplan.variants], python=opts.python,
                                   backend=rplan.backend)
    for note in checked.notes:
        print(f"note: {note}", file=sys.stderr)  # said plainly; the run goes on unchecked there
    for line in engineargs.hung_lines(scenario, checked):  # once per interpreter: its variants do not run
        print(f"error: {line}", file=sys.stderr)
    rplan.not_started = dict(checked.hung)
    engineargs.check_startup(scenario, [v for v in rplan.device_models if v not in checked.hung], python=opts.python)
    return rplan


def execute(rplan: planning.RunPlan, opts: RunOptions) -> RunResult:
    """Every (variant, repeat) of ``opts`` (all, or a shard's) in its own worker, into a new run
    directory: run.json first, each variant's JUnit file after each of its workers, the merged
    events at the end. Ctrl-C (at any moment once the directory exists) and a full disk leave what
    was written and mark the run incomplete."""
    scenario = rplan.scenario
    matrix = [(v, r) for v in rplan.variants for r in rplan.repeats
              if opts.only is None or (v.name, r) in opts.only]
    early = _early_stop(rplan, opts)
    if early is not None:
        matrix = [(v, r) for r in rplan.repeats for v in rplan.variants]  # round by round, to look after each
    # absolute: the workers start in the repository root, not in the caller's directory
    run_dir = Path(opts.out).absolute() / scenario.name / (opts.run_id or new_run_id())
    result = RunResult(run_dir, rplan, {v.name: [] for v in rplan.variants if any(v is m[0] for m in matrix)})
    rehearsal = next((sub for sub in rplan.substitutions if sub.what == "platform"), None)
    meta = _run_meta(rplan, run_dir, matrix)
    meta["rehearsal"] = rehearsal is not None
    if opts.shard:
        meta["shard"] = opts.shard
    if opts.steps is not None:
        meta["steps_selected"] = list(opts.steps)
    if opts.allow:
        meta["allow"] = sorted(opts.allow)
    if scenario.overrides:  # --set: what the command line changed, key by key
        meta["set"] = [{"key": a.key, "before": a.before, "after": a.after, "from": a.setting}
                       for a in scenario.overrides]
    ledger = Path(os.environ.get(LEDGER_ENV) or run_dir / "sim-ledger.json")
    hooks = backends.runner_hooks(rplan.backend, next(iter(rplan.device_models.values()), None))
    disk_full: atomic.DiskFull | None = None
    created = False
    try:  # from the moment the run directory exists, an interrupt leaves it finished and marked incomplete
        make_run_dir(run_dir.parent.parent, scenario.name, run_dir.name)
        created = True
        atomic.write_json(run_dir / "run.json", meta)
        if rehearsal is not None:  # the README's word for it, said where the run starts
            opts.announce(f"rehearsal: this machine has no {rehearsal.before}; every step runs for real on "
                          f"{rehearsal.after}, with the substitutions below")
        for sub in rplan.substitutions:
            opts.announce(f"substituted {sub}")
        for variant, repeat in matrix:
            if variant.name in rplan.not_started:  # its interpreter did not even answer about vLLM
                vr = _not_started(rplan, variant, repeat, rplan.not_started[variant.name])
            else:
                hooks.settle(rplan, ledger, _devices(rplan, opts))
                vr = run_worker(rplan, variant, repeat, run_dir, ledger, opts)
            result.variants[variant.name].append(vr)
            _write_variant(result, variant.name, meta)
            meta["orphans"].extend({"variant": variant.name, "repeat": repeat, **o} for o in vr.orphans)
            result.problems.extend(vr.problems)
            meta["problems"] = result.problems
            if vr.exit_status == "interrupted":
                raise KeyboardInterrupt
            if vr.exit_status == "disk_full":
                raise atomic.DiskFull(run_dir / "logs" / f"{variant.name}-r{repeat}.events.jsonl",
                                      OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
            if early is not None and variant is rplan.variants[-1] and early.after_round(
                    repeat + 1, {n: earlystop.vram_counts(vrs) for n, vrs in result.variants.items()}):
                opts.announce(f"early stop after round {repeat + 1} of {early.rounds}: every candidate's "
                              f"verdict is decided ({early.rounds - repeat - 1} round(s) not needed)")
                break
    except KeyboardInterrupt:
        result.incomplete = True
        if not created and not run_dir.is_dir():
            raise  # nothing was made yet: nothing to finish
    except atomic.DiskFull as e:  # stop cleanly: what is written stays, and the run says it is incomplete
        result.incomplete, disk_full = True, e
    if early is not None:
        meta["sequential"] = early.record()
    meta.update(incomplete=result.incomplete, finished=_now())
    disk_full = shielded(lambda: _finish(result, meta, matrix, hooks, ledger))[0] or disk_full
    if disk_full is not None:
        raise disk_full
    return result


def _finish(result: RunResult, meta: dict[str, Any], matrix, hooks, ledger: Path) -> atomic.DiskFull | None:
    """What every run directory gets, however its run ended: run.json final, the events merged."""
    hooks.finish(ledger)
    try:
        atomic.write_json(result.run_dir / "run.json", meta)
        events.merge_files(result.run_dir, [(v.name, r) for v, r in matrix])
    except atomic.DiskFull as e:
        return e
    return None


def shielded(finish: Callable[[], Any]) -> tuple[Any, bool]:
    """``finish()`` run to its end though Ctrl-C (or the CI's SIGTERM) comes meanwhile: its writes are
    whole-file and idempotent, so an interrupted one is simply made again. Its result, and whether
    it was interrupted."""
    for attempt in range(3):
        try:
            return finish(), attempt > 0
        except KeyboardInterrupt:
            continue
    return finish(), True


def _not_started(rplan: planning.RunPlan, variant, repeat: int, why: str, status: str = "not started") -> VariantResult:
    """A variant whose worker never started: each planned step (a pytest suite: its session) not run."""
    planned = rplan.steps or [{"name": "session", "classname": "pytest"}]
    steps = [StepResult(p["name"], repeat, Outcome.SKIPPED, message=f"{NOT_RUN}{why}", classname=p.get("classname"))
             for p in planned]
    return VariantResult(variant.name, variant.profile, steps, {}, [], status)


def _early_stop(rplan: planning.RunPlan, opts: RunOptions) -> earlystop.EarlyStop | None:
    names = [v.name for v in rplan.variants]
    baseline = rplan.scenario.baseline
    if not opts.early_stop or not earlystop.EarlyStop.applies(names, baseline, len(rplan.repeats),
                                                             sharded=opts.only is not None):
        return None
    return earlystop.EarlyStop(baseline, [n for n in names if n != baseline], len(rplan.repeats), len(rplan.steps))


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _run_meta(rplan: planning.RunPlan, run_dir: Path, matrix) -> dict[str, Any]:
    sc = rplan.scenario
    return {
        "version": RUN_VERSION, "scenario": sc.name, "scenario_path": str(sc.path), "run_id": run_dir.name,
        "baseline": sc.baseline, "variants": [v.name for v in rplan.variants if any(v is m[0] for m in matrix)],
        "profiles": {v.name: v.profile for v in rplan.variants},
        "repeat": len(rplan.repeats), "matrix": [[v.name, r] for v, r in matrix],
        "incomplete": True, "started": _now(), "finished": None,
        "backend": rplan.backend, "platform": rplan.platform, "host_platform": rplan.host_platform,
        "substitutions": [str(s) for s in rplan.substitutions], "orphans": [], "settle": [],
        "harness_version": __version__, "argv": sys.argv,
    }


def _write_variant(result: RunResult, name: str, meta: dict[str, Any]) -> None:
    vrs = result.variants[name]
    info = next((vr.info for vr in vrs if vr.info), {})
    props = {
        "scenario": result.plan.scenario.name, "variant": name, "teardown_profile": vrs[0].profile,
        "backend": result.plan.backend, "platform": info.get("platform", result.plan.platform),
        "device_name": info.get("device_name", ""), "vllm_version": info.get("vllm_version", ""),
        "torch_version": info.get("torch_version", ""), "python": info.get("python", ""),
        "probe": info.get("probe", ""), "probe_second": info.get("probe_second", ""), "run_id": meta["run_id"], "harness_version": __version__,
        "substitution": meta["substitutions"], "worker_exit": [vr.exit_status for vr in vrs],
    }
    case_props = {"profile": vrs[0].profile}
    sha = ((result.plan.pytest or {}).get("checkouts", {}).get(name) or {}).get("sha")
    if sha:
        case_props["checkout_ref"] = sha  # the revision of the tree this variant's tests ran from
    junit.write_variant(result.run_dir / f"{name}.xml", result.plan.scenario.name, vrs,
                        len(result.plan.repeats), props, case_props)


def run_worker(rplan: planning.RunPlan, variant, repeat: int, run_dir: Path, ledger: Path,
               opts: RunOptions) -> VariantResult:
    """One worker: its plan written, the subprocess started and watched through its events (each
    step's deadline), stopped and swept of leftover processes, its events turned into results."""
    stem = f"{variant.name}-r{repeat}"
    logs = run_dir / "logs"
    ev_path, log_path, plan_path = logs / f"{stem}.events.jsonl", logs / f"{stem}.log", logs / f"{stem}.plan.json"
    wplan = planning.worker_plan(rplan, variant, repeat, events=ev_path, ledger=ledger, devices=opts.devices)
    atomic.write_json(plan_path, wplan)
    token = uuid.uuid4().hex
    hooks = backends.runner_hooks(rplan.backend, next(iter(rplan.device_models.values()), None))
    env = planning.worker_env(rplan, variant, token, ledger)
    argv = [opts.python or planning.interpreter(variant), "-m", "harness.run.worker", str(plan_path)]
    timeouts = rplan.scenario.timeouts
    tail = events.EventTail(ev_path)
    seen: list[dict] = []
    stopped: str | None = None
    with open(log_path, "ab") as log:
        proc = procs.spawn(argv, env=env, output=log, cwd=str(planning.HARNESS_ROOT), lifeline=True)
    deadline = Deadline(timeouts.worker_start)
    try:
        while True:
            for ev in tail.read():
                seen.append(ev)
                vocab.dispatch(deadline, ev)
                if opts.progress:
                    opts.progress(variant.name, repeat, ev)
            if proc.poll() is not None:
                seen.extend(tail.read())
                if proc.returncode == EXIT_DISK_FULL:
                    stopped = "disk_full"
                break
            if deadline.passed():
                stopped = "timeout"
                break
            time.sleep(0.05)
    except KeyboardInterrupt:  # keep what this worker finished; the caller marks the run incomplete
        stopped = "interrupted"
    finally:
        grace, interrupted = timeouts.stop_grace, False
        while True:  # a Ctrl-C (or the CI's SIGTERM) during the cleanup must not cut it short
            try:
                procs.stop(proc, grace)  # also reaps EngineCore processes the worker left behind
                orphans = procs.sweep(token, describe=lambda pid: hooks.orphan_memory(ledger, pid))
                break
            except KeyboardInterrupt:
                interrupted, grace = True, 0.0  # asked again: no more grace, SIGKILL
    vr = WorkerExit(variant, repeat, seen, wplan, log_path, stopped, proc.returncode, orphans).result()
    vr.problems = kinds.of_plan(wplan).problems(seen, variant.name, argv[0], wplan, log_path)
    if opts.progress:
        opts.progress.worker_done(variant.name, repeat, vr.steps)
    if interrupted:
        vr.exit_status = "interrupted"  # the caller writes this variant, then stops the run
    return vr


class Deadline:
    """The wall-clock deadline of a worker, moved by its events: a step's own ``timeout_s`` while
    it runs, the worker-start timeout before its first step and between steps."""

    def __init__(self, between_steps_s: float):
        self.between_steps_s = between_steps_s
        self.at = time.monotonic() + between_steps_s

    def passed(self) -> bool:
        """Whether the worker has run past it."""
        return time.monotonic() > self.at

    def on_step_start(self, ev: dict[str, Any]) -> None:
        self.at = time.monotonic() + float(ev["timeout_s"])

    def on_step_end(self, ev: dict[str, Any]) -> None:
        self.at = time.monotonic() + self.between_steps_s

    on_worker_start = on_step_end


@dataclass
class WorkerExit:
    """What the runner saw of one worker, turned into its `VariantResult`."""

    variant: scenario_mod.Variant
    repeat: int
    events: list[dict]  # every event the worker wrote
    plan: dict[str, Any]  # the worker plan
    log: Path
    stopped: str | None  # "timeout" or "interrupted" when the runner stopped it
    returncode: int | None
    orphans: list[dict]  # processes left behind, found by procs.sweep

    def result(self) -> VariantResult:
        """The variant's results of this worker: its suite kind's planned steps and extra cases."""
        desc = procs.exit_description(self.returncode)
        kind = kinds.of_plan(self.plan)
        planned = kind.planned_steps(self.plan, self.events)
        extra = kind.extra_cases(self.events, self.log, desc)
        info, steps = events.collect(self.events, planned, log=self.log, stopped=self.stopped,
                                     exit_description=desc)
        steps = extra + steps
        for s in steps:
            s.repeat = self.repeat
        status = self.stopped or ("ok" if self.returncode == 0 else desc)
        return VariantResult(self.variant.name, self.variant.profile, steps, info, self.orphans, status)


def _devices(rplan: planning.RunPlan, opts: RunOptions) -> list[int]:
    return opts.devices if opts.devices is not None else list(range(rplan.scenario.devices))
