"""Is one revision good or bad? Run the scenario once with one variant and judge its JUnit file.

- `--fail-on vram` (default): bad when a step failed with `vram_construction`;
- `--fail-on any`: bad when any step failed;
- `--fail-on held-after:ACTION>GIB`: bad when, for any step, the memory still held after the
  teardown action ACTION (property `mem_after_<ACTION>_bytes` minus `mem_before_construct_bytes`)
  exceeds GIB — the engine half of a fix shows here even when no construction fails;
- `--fail-on wait>S`: bad when any step waited more than S seconds for memory (property `wait_s`:
  its settle and teardown waits) — a teardown fix that got slow, as upstream's #57371 did.

A revision is skipped (git bisect's 125) when the run could not happen or cannot tell: the
interpreter is missing, the worker never started, a `call:` target does not exist in that revision,
or (except with `any`) no step built an engine, so no teardown was tested.
"""

from __future__ import annotations

import contextlib
import enum
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from harness.device import GIB
from harness.run import procs
from harness.run.engineargs import UnknownEngineArgument
from harness.run import runner
from harness.scenario import schema as scenario_mod
from harness.scenario import yamlsafe
from harness.scenario.suite import NATIVE
from harness.errors import InfrastructureError, InputError, ScenarioError
from harness.results import cost
from harness.results.junitread import Case, read_cases
from harness.model import FailureClass, Outcome



class StepVerdict(str, enum.Enum):
    GOOD = "good"
    BAD = "bad"
    SKIP = "skip"

    def __str__(self) -> str:
        return self.value

    @property
    def exit_code(self) -> int:
        """What `git bisect run` understands: 0 good, 1 bad, 125 cannot test this revision."""
        return {"good": 0, "bad": 1, "skip": 125}[self.value]


@dataclass(frozen=True)
class FailOn:
    kind: str  # "vram", "any", "held" or "wait"
    action: str = ""
    limit_gib: float = 0.0
    limit_s: float = 0.0

    @classmethod
    def parse(cls, text: str) -> FailOn:
        if text in ("vram", "any"):
            return cls(text)
        number = r"(\d+(?:\.\d*)?|\.\d+)"
        m = re.fullmatch(rf"held-after:(\w+)>{number}", text.replace(" ", ""))
        if m:
            return cls("held", m.group(1), float(m.group(2)))
        m = re.fullmatch(rf"wait>{number}", text.replace(" ", ""))
        if m:
            return cls("wait", limit_s=float(m.group(1)))
        raise InputError(f"--fail-on: {text!r} is not valid (valid: vram, any, held-after:ACTION>GIB, wait>SECONDS, "
                         "e.g. held-after:engine_core_shutdown>5 or wait>30)")

    def __str__(self) -> str:
        if self.kind == "held":
            return f"held-after:{self.action}>{self.limit_gib:g}"
        return f"wait>{self.limit_s:g}" if self.kind == "wait" else self.kind

    def check(self, scenario: scenario_mod.Scenario, variant: str) -> None:
        """A threshold on an action the variant never runs would call every revision good."""
        if self.kind != "held":
            return
        profile = scenario.profiles[scenario.variant(variant).profile]
        names = sorted({a.name for a in (*profile.before, *profile.after)} | ({"runner_exit"} if profile.name == NATIVE
                                                                            else set()))
        if self.action not in names:
            raise InputError(f"--fail-on: variant '{variant}' (teardown profile '{profile.name}') runs no "
                             f"action '{self.action}' (its actions: {', '.join(names)})")


@dataclass(frozen=True)
class Judgement:
    verdict: StepVerdict
    reason: str
    run_dir: str = ""
    junit: str = ""
    log: str = ""  # the variant's worker log, or the build log of a revision that did not build

    def to_dict(self) -> dict:
        return {"verdict": str(self.verdict), "reason": self.reason, "run_dir": self.run_dir,
                "junit": self.junit, "log": self.log}

    @classmethod
    def from_dict(cls, d: dict) -> Judgement:
        return cls(StepVerdict(d["verdict"]), d.get("reason", ""), d.get("run_dir", ""), d.get("junit", ""),
                   d.get("log", ""))


def judge(cases: list[Case], fail_on: FailOn) -> tuple[StepVerdict, str]:
    """Good, bad or skip from the cases of one variant's JUnit file."""
    for case in cases:
        if fail_on.kind == "held":
            held = _held_bytes(case, fail_on.action)
            if held is not None and held > fail_on.limit_gib * GIB:
                return StepVerdict.BAD, (f"step '{case.name}' still held {held / GIB:.2f} GiB after "
                                         f"{fail_on.action} (limit {fail_on.limit_gib:g} GiB)")
        elif fail_on.kind == "wait":
            waited = cost.wait_of(case.properties)
            if waited is not None and waited > fail_on.limit_s:
                return StepVerdict.BAD, (f"step '{case.name}' waited {waited:.2f} s for memory "
                                         f"(limit {fail_on.limit_s:g} s)")
        elif case.outcome is Outcome.FAILED and (fail_on.kind == "any"
                                                 or case.failure_class is FailureClass.VRAM_CONSTRUCTION):
            return StepVerdict.BAD, f"step '{case.name}' failed with {case.failure_class}: {case.message[:200]}"
    failed = [c for c in cases if c.outcome is Outcome.FAILED]
    if fail_on.kind != "any" and not any(c.properties.get("mem_after_construct_bytes") for c in cases):
        # e.g. an old release that cannot load the model: a leak between engines cannot show
        why = f"{failed[0].failure_class}: {failed[0].message[:200]}" if failed else "no step ran"
        return StepVerdict.SKIP, f"no engine was built, so no teardown was tested ({why})"
    return StepVerdict.GOOD, f"{len(cases)} steps, {len(failed)} failed, none counts under --fail-on {fail_on}"


def _held_bytes(case: Case, action: str) -> int | None:
    after, before = case.properties.get(f"mem_after_{action}_bytes"), case.properties.get("mem_before_construct_bytes")
    if after in (None, "") or before in (None, ""):
        return None  # the step never got to that action
    return int(float(after)) - int(float(before))


def run_once(scenario_path: Path, variant: str | None, fail_on: FailOn, out: Path, *, python: str | None = None,
             run_id: str | None = None, announce: Callable[[str], None] = print,
             steps: list[str] | None = None, vllm_src: str | None = None,
             checkout_ref: str | None = None, sets: tuple = ()) -> Judgement:
    """Run `variant` (default: the scenario's baseline) once and judge it; a pytest suite in
    `vllm_src` when given (the revision `checkout_ref`'s tree, whatever the variants' refs)."""
    try:
        with revision_imports(scenario_path, python):
            scenario = scenario_mod.load(scenario_path, sets)
            variant = check(scenario, variant, fail_on)
            result = runner.run(scenario, runner.RunOptions(out=out, variants=[variant], python=python,
                                                            run_id=run_id, announce=announce, steps=steps,
                                                            vllm_src=vllm_src, checkout_ref=checkout_ref))
    except InfrastructureError as e:
        return Judgement(StepVerdict.SKIP, f"infrastructure: {e}")
    except ScenarioError as e:
        # the revision lacks the user's teardown code, or its vLLM lacks an engine argument
        if all(_is_call_target(x) or isinstance(x, UnknownEngineArgument) for x in _each(e)):
            return Judgement(StepVerdict.SKIP, str(e))
        raise
    if result.incomplete:
        raise KeyboardInterrupt  # an interrupted run says nothing about the revision
    workers = result.variants[variant]  # one per repeat
    junit = result.run_dir / f"{variant}.xml"
    log = result.run_dir / "logs" / f"{variant}-r0.log"
    where = dict(run_dir=str(result.run_dir), junit=str(junit), log=str(log))
    if not any(vr.info for vr in workers):  # no worker_start: the revision's interpreter cannot run it
        return Judgement(StepVerdict.SKIP, f"infrastructure: the worker did not start ({workers[0].exit_status})",
                         **where)
    verdict, reason = judge(read_cases(junit), fail_on)
    return Judgement(verdict, reason, **where)


def check(scenario: scenario_mod.Scenario, variant: str | None, fail_on: FailOn) -> str:
    """The variant to judge (default: the baseline), after checking it and the predicate."""
    variant = variant or scenario.baseline
    names = [v.name for v in scenario.variants]
    if variant not in names:
        raise InputError(f"{scenario.path}: --variant: no variant '{variant}' (valid: {', '.join(names)})")
    fail_on.check(scenario, variant)
    return variant


def precheck(scenario_path: Path, variant: str | None, fail_on: FailOn,
             sets: tuple = ()) -> scenario_mod.Scenario | None:
    """Catch a typo before the first build, which may take many minutes. Only a `call:` target is
    left to each revision: it may exist only there. The scenario as loaded; None when a `call:`
    target is missing here."""
    try:
        scenario = scenario_mod.load(scenario_path, sets)
    except ScenarioError as e:
        if not all(_is_call_target(x) for x in _each(e)):
            raise
        return None
    check(scenario, variant, fail_on)
    return scenario


def _each(e: ScenarioError) -> list[ScenarioError]:
    """The mistakes one load found (ScenarioErrors holds every mistake of the file)."""
    return getattr(e, "errors", [e])


def _is_call_target(e: ScenarioError) -> bool:
    return bool(e.key) and e.key.endswith(".target")


# --------------------------------------------------------------------------- the revision's imports
def call_targets(scenario_path: Path) -> list[str]:
    """The `module:function` of every `call` action, read from the raw YAML (loading the scenario
    would already need them importable)."""
    found: list[str] = []

    def walk(node) -> None:
        if isinstance(node, dict):
            call = node.get("call")
            target = call.get("target") if isinstance(call, dict) else call
            if isinstance(target, str):
                found.append(target)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    raw = yamlsafe.load(Path(scenario_path))
    walk(raw.get("teardown_profiles") if isinstance(raw, dict) else None)
    return found


_FIND_ROOTS = """
import importlib.util, json, os, sys
sys.path.insert(0, sys.argv[1])
roots = []
for top in sys.argv[2:]:
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        spec = None
    if spec is not None:  # a package's folder, or a module's file: the folder above is the root
        places = list(spec.submodule_search_locations or []) or [spec.origin]
        roots += [os.path.dirname(p) for p in places if p and os.path.isabs(p)]
print(json.dumps(roots))
"""


@contextlib.contextmanager
def revision_imports(scenario_path: Path, python: str | None) -> Iterator[None]:
    """While loading the scenario, let its `call:` targets be found where the revision's interpreter
    finds them: the user's teardown code may exist only in the revision being tested (the worker,
    running that interpreter, finds it by itself)."""
    tops = sorted({t.partition(":")[0].split(".")[0] for t in call_targets(scenario_path)})
    if not tops or python is None or not Path(python).exists():
        yield
        return
    done = procs.run([python, "-c", _FIND_ROOTS, str(Path(scenario_path).parent.resolve()), *tops], timeout=120)
    roots = json.loads(done.output.strip().splitlines()[-1]) if done else []  # not found: load() says so
    saved_path, saved_modules = list(sys.path), set(sys.modules)
    sys.path[:0] = roots
    try:
        yield
    finally:
        sys.path[:] = saved_path
        for name in set(sys.modules) - saved_modules:  # the next revision must not see this one's code
            if name.split(".")[0] in tops:
                del sys.modules[name]
