"""Resolve a scenario into worker plans: one per (variant, repeat), with the engine arguments each
step really gets on this machine, and a list of every substitution made to get there.

A scenario written for ROCm still runs, for real, on a machine without its platform (a rehearsal):
the models become the built-in tiny Llama and device settings that make no sense there are mapped.
Every such change is a `Substitution`, printed first and recorded in the JUnit and the report.
`strict_platform` turns a mismatch into an error instead (the nightly job uses it).
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import multicast
from harness.device import LEDGER_ENV, MULTIPROCESSING_ENV
from harness.devicemodel import settings as device_settings
from harness.errors import HarnessError, InfrastructureError
from harness.model import Substitution
from harness.run import kinds
from harness.run.procs import TOKEN_ENV
from harness.run.tinymodel import ensure_tiny_llama
from harness.scenario.schema import Scenario, Variant
from harness.scenario.specs import BUILTIN_MODELS
from harness.scenario.suite import NATIVE

HARNESS_ROOT = Path(__file__).resolve().parents[2]

# Environment for vLLM on CPU: a 1 GiB KV cache is plenty for the tiny model. Engines keep vLLM's
# default, an EngineCore child process, as on a GPU node; `rehearsal: {engine_process: in-process}`,
# VLLM_ENABLE_V1_MULTIPROCESSING=0 in the caller's environment or a variant's `env:` builds them in
# the worker instead (faster, less faithful).
CPU_REHEARSAL_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1"}
# Engine arguments that only mean something on a GPU, dropped on CPU. tensor_parallel_size is kept:
# vLLM-CPU runs TP ranks as processes ("mp" executor), one core each (VLLM_CPU_OMP_THREADS_BIND).
GPU_ONLY_ARGS = ("pipeline_parallel_size", "kv_cache_dtype", "quantization",
                 "cpu_offload_gb", "swap_space", "block_size", "enable_chunked_prefill")
CPU_BIND_ENV = "VLLM_CPU_OMP_THREADS_BIND"


BUILTIN_TINY = BUILTIN_MODELS[0]  # a scenario may name the built-in model directly


@dataclass
class RunPlan:
    scenario: Scenario
    host_platform: str
    platform: str  # the platform the workers really run on
    backend: str
    substitutions: list[Substitution] = field(default_factory=list)
    engine_env: dict[str, str] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)
    variants: list[Variant] = field(default_factory=list)
    repeats: list[int] = field(default_factory=list)
    pytest: dict[str, Any] | None = None  # the suite kind's worker-plan section (a pytest suite's)
    device_models: dict[str, device_settings.DeviceModel] = field(default_factory=dict)  # by variant
    not_started: dict[str, str] = field(default_factory=dict)  # variant -> why its worker cannot start


def detect_platform() -> str:
    """The accelerator this machine has, without importing torch (slow, and maybe absent here)."""
    override = os.environ.get("HARNESS_PLATFORM")
    if override:
        return override
    if os.path.exists("/dev/kfd") or shutil.which("amd-smi") or shutil.which("rocm-smi"):
        return "rocm"
    if os.path.exists("/proc/driver/nvidia/version") or shutil.which("nvidia-smi"):
        return "cuda"
    return "cpu"


def build(scenario: Scenario, *, backend: str | None = None, variants: list[str] | None = None,
          repeat: int | None = None, model: str | None = None, strict_platform: bool = False,
          host_platform: str | None = None, steps: list[str] | None = None,
          vllm_src: str | None = None, checkout_ref: str | None = None) -> RunPlan:
    """The run's plan: the variants and repeats to run, each step's engine arguments as this
    machine will really get them, and every substitution made to get there (a rehearsal's model and
    platform, the CPU's engine arguments, the suite kind's own, the modelled device).
    `checkout_ref`: `vllm_src` is that revision's tree (bisect), which every variant runs."""
    if repeat is not None and not (isinstance(repeat, int) and 1 <= repeat <= 10_000):
        raise HarnessError(f"--repeat: {repeat!r} is out of range (must be 1..10000)")  # the command line's own check
    backend = backend or scenario.backend
    host = host_platform or detect_platform()
    chosen = _select_variants(scenario, variants)
    plan = RunPlan(scenario, host, host, backend, variants=chosen,
                   repeats=list(range(repeat if repeat is not None else scenario.repeat)))
    if backend == "sim":
        # The simulated device is the scenario's platform wherever it runs.
        plan.platform = scenario.platform if scenario.platform != "any" else "rocm"
    elif scenario.platform not in ("any", host):
        if strict_platform:  # this machine cannot run the job: exit 3 (bisect skips such a revision)
            raise InfrastructureError(f"{scenario.path}: platform: scenario needs '{scenario.platform}' but this "
                               f"machine is '{host}' (--strict-platform)")
        plan.substitutions.append(Substitution("platform", scenario.platform, host,
                                               "this machine does not have the scenario's platform"))
    for a in scenario.overrides:  # --set PATH=VALUE, first: the scenario as this run read it
        plan.substitutions.append(Substitution(a.key, a.before, a.after, f"--set {a.setting}"))
    for k, v in multicast.conflicts(os.environ).items():
        plan.substitutions.append(Substitution(f"env {k}", v, multicast.MULTICAST_OFF[k], multicast.REASON))
    tiny = None
    ranks = 1
    for step in scenario.steps:
        if steps is not None and step.name not in steps:  # --step / -k (harness/run/select.py)
            continue
        engine = {**scenario.defaults, **step.engine}
        if engine.get("model") == BUILTIN_TINY:
            tiny = tiny or _tiny_llama()
            engine["model"] = tiny
        if model is not None:
            engine = _replace_model(plan, engine, model, "--model")
        elif backend == "vllm" and host == "cpu" and scenario.platform not in ("cpu", "any"):
            tiny = tiny or _tiny_llama()
            engine = _replace_model(plan, engine, tiny, "no model hub here; built-in tiny Llama")
        if backend == "vllm" and host == "cpu":
            engine = _map_to_cpu(plan, engine)
            ranks = max(ranks, int(engine.get("tensor_parallel_size", 1)))
        plan.steps.append({"name": step.name, "index": len(plan.steps), "engine": engine,
                           "workload": _workload(step.workload), "expect": dict(step.expect),
                           "timeout_s": step.timeout_s})
    plan.pytest, subs = kinds.of_scenario(scenario).plan(
        scenario, backend=backend, host_platform=host, vllm_src=vllm_src, model=model, tiny_model=ensure_tiny_llama,
        checkout_ref=checkout_ref)
    plan.substitutions.extend(subs)
    if backend == "vllm" and host == "cpu":
        for k, v in CPU_REHEARSAL_ENV.items():
            if k not in os.environ:
                plan.engine_env[k] = v
                plan.substitutions.append(Substitution(f"env {k}", "unset", v, "vLLM on CPU: small KV cache"))
        if ranks > 1 and CPU_BIND_ENV not in os.environ:
            # without it vLLM-CPU wants a NUMA node per rank ("Not enough allowed NUMA nodes")
            bind = "|".join(str(c) for c in _cpu_cores()[:ranks])
            plan.engine_env[CPU_BIND_ENV] = bind
            plan.substitutions.append(Substitution(f"env {CPU_BIND_ENV}", "unset", bind,
                                                   "vLLM on CPU: one core per tensor-parallel rank"))
    rehearsal = backend == "vllm" and host == "cpu" and scenario.platform in device_settings.PRESETS
    if rehearsal and scenario.rehearsal_engine_process == "in-process" and MULTIPROCESSING_ENV not in os.environ:
        plan.engine_env[MULTIPROCESSING_ENV] = "0"  # a variant's `env:` and the caller's still decide
        plan.substitutions.append(Substitution(
            f"env {MULTIPROCESSING_ENV}", "unset", "0",
            "rehearsal.engine_process: in-process: engines in the worker, not in an EngineCore child"))
    _device_models(plan, rehearsal=rehearsal)
    _faults_native_cannot_take(plan)
    _dedupe(plan)
    return plan


def _device_models(plan: RunPlan, rehearsal: bool) -> None:
    """The modelled device under each variant's real vLLM-CPU engines: by default in a rehearsal
    of a GPU scenario, where a variant asks (`inject: device_model`), never where it says `false`."""
    sc = plan.scenario
    for v in plan.variants:
        spec = v.inject.get("device_model")
        key = f"{sc.path}: variants.{v.name}.inject.device_model"
        if spec is False or (spec is None and not rehearsal):
            continue
        if plan.backend != "vllm" or plan.host_platform != "cpu":
            raise HarnessError(f"{key}: the modelled device runs under vLLM on CPU only "
                               f"(backend {plan.backend}, this machine: {plan.host_platform})")
        model = device_settings.for_platform(sc.platform, spec or {})
        lazy = v.inject.get("lazy_release")
        if lazy:  # a slow release is the modelled device's release delay
            if "step" in lazy:
                raise HarnessError(f"{sc.path}: variants.{v.name}.inject.lazy_release.step: the modelled "
                                   "device slows every release; drop `step` or set device_model: false")
            model = device_settings.replace(model, release_delay_s=float(lazy["seconds"]))
        plan.device_models[v.name] = model
        plan.substitutions.append(Substitution(
            "device", sc.platform, f"modelled {model.describe()}",
            "vLLM-CPU engines under a model of the device's startup check, accounting and release delay"))
    _one_device(plan)


def _faults_native_cannot_take(plan: RunPlan) -> None:
    """`native` runs no action of the harness's, so nothing could hold the memory an engine gives
    back: a lazy release there would be silently ignored. On the modelled device it is the release
    delay instead, which needs no action."""
    for v in plan.variants:
        if v.profile == NATIVE and "lazy_release" in v.inject and v.name not in plan.device_models:
            raise HarnessError(f"{plan.scenario.path}: variants.{v.name}.inject.lazy_release: under 'native' the "
                               "harness runs no teardown action that could hold the released memory; use "
                               "profile 'legacy' (upstream's __exit__ before PR #43023) for a lazy release")


def _one_device(plan: RunPlan) -> None:
    """Every variant of a run runs on one device: a baseline with an 8 s reclaim against a
    candidate with none (or on host memory) would make any fix look good. Only the seed may differ."""
    first, *others = plan.variants
    a = plan.device_models.get(first.name)
    for v in others:
        b = plan.device_models.get(v.name)
        where = f"{plan.scenario.path}: variants.{v.name}.inject.device_model"
        if (a is None) != (b is None):
            on, off = (first.name, v.name) if b is None else (v.name, first.name)
            raise HarnessError(f"{where}: variant '{on}' runs on the modelled device and '{off}' does not: "
                               "every variant of a run uses the same device")
        if a is None or b is None:
            continue
        for k in device_settings.KEYS:
            if k != "seed" and getattr(a, k) != getattr(b, k):
                shown = [f"{x:g}" if isinstance(x, float) else repr(x) for x in (getattr(b, k), getattr(a, k))]
                raise HarnessError(f"{where}.{k}: {shown[0]} in variant '{v.name}', {shown[1]} in "
                                   f"variant '{first.name}': every variant of a run uses the same device "
                                   "(only the seed may differ)")


def _tiny_llama() -> str:
    return str(ensure_tiny_llama())


def _select_variants(scenario: Scenario, names: list[str] | None) -> list[Variant]:
    if not names:
        return list(scenario.variants)
    valid = [v.name for v in scenario.variants]
    for n in names:
        if n not in valid:
            raise HarnessError(f"{scenario.path}: variants: no variant '{n}' (valid: {', '.join(valid)})")
    return [scenario.variant(n) for n in names]


def _replace_model(plan: RunPlan, engine: dict, model: str, reason: str) -> dict:
    before = str(engine.get("model", "(none)"))
    if before != model:
        plan.substitutions.append(Substitution("model", before, model, reason))
    engine = {**engine, "model": model}
    engine.pop("tokenizer", None)
    return engine


def _cpu_cores() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def _map_to_cpu(plan: RunPlan, engine: dict) -> dict:
    engine = dict(engine)
    tp = int(engine.get("tensor_parallel_size", 1))
    cores = len(_cpu_cores())
    if tp > cores:
        plan.substitutions.append(Substitution("tensor_parallel_size", str(tp), "1",
                                               f"vLLM on CPU: one core per rank, {cores} allowed here"))
        engine["tensor_parallel_size"] = tp = 1
    # several ranks need the multiprocessing executor; one runs in the engine's own process
    changes = {"dtype": "float32", "distributed_executor_backend": "mp" if tp > 1 else "uni"}
    for key, value in changes.items():
        if engine.get(key) != value:
            plan.substitutions.append(Substitution(key, str(engine.get(key, "(default)")), value, "vLLM on CPU"))
            engine[key] = value
    for key in GPU_ONLY_ARGS:
        if key in engine:
            plan.substitutions.append(Substitution(key, str(engine.pop(key)), "(dropped)", "GPU-only setting"))
    if engine.get("max_model_len", 0) > 512 or "max_model_len" not in engine:
        plan.substitutions.append(Substitution("max_model_len", str(engine.get("max_model_len", "(model's)")),
                                               "512", "tiny model's context"))
        engine["max_model_len"] = 512
    return engine


def _dedupe(plan: RunPlan) -> None:
    seen, unique = set(), []
    for s in plan.substitutions:
        if (s.what, s.before, s.after) not in seen:
            seen.add((s.what, s.before, s.after))
            unique.append(s)
    plan.substitutions = unique


def _workload(workload) -> dict | None:
    if workload is None:
        return None
    return {"prompts": list(workload.prompts), "sampling": [dict(s) for s in workload.sampling],
            "runs": workload.runs}


def worker_plan(plan: RunPlan, variant: Variant, repeat: int, *, events: Path, ledger: Path,
                devices: list[int] | None = None) -> dict[str, Any]:
    """The JSON document one worker runs (docs/architecture.md, "Worker plan")."""
    profile = plan.scenario.profiles[variant.profile]
    steps = [{**s, "engine": {**s["engine"], **variant.engine}} for s in plan.steps]
    model = plan.device_models.get(variant.name)
    extra = {"device_model": device_settings.asdict(model), "probe": "devicemodel"} if model else {}
    return {
        "scenario": plan.scenario.name,
        "scenario_dir": str(plan.scenario.path.parent.resolve()),
        "variant": variant.name,
        "repeat": repeat,
        "backend": plan.backend,
        "platform": plan.platform,
        "profile": {"name": profile.name, "before": [a.to_dict() for a in profile.before],
                    "after": [a.to_dict() for a in profile.after]},
        "steps": steps,
        "sim": {k: getattr(plan.scenario.sim, k) for k in plan.scenario.sim.__dataclass_fields__},
        "inject": {k: dict(v) for k, v in variant.inject.items() if k != "device_model"},
        "devices": devices if devices is not None else list(range(plan.scenario.devices)),
        "events": str(events),
        "ledger": str(ledger),
        # events are in <run>/logs/
        "pytest": kinds.of_scenario(plan.scenario).worker_section(plan.pytest, variant, Path(events).parent.parent),
        **extra,
    }


def worker_env(plan: RunPlan, variant: Variant, token: str, ledger: Path,
               base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of one worker: the caller's (or ``base``), the plan's and the variant's
    variables, multicast kept off, the run's ledger and token, the modelled device's settings."""
    env = dict(os.environ if base is None else base)
    env.update(plan.engine_env)
    env.update(variant.env)
    multicast.keep_off(env)  # last: neither the caller's environment nor a variant turns it on
    env[TOKEN_ENV] = token
    env[LEDGER_ENV] = str(ledger)
    model = plan.device_models.get(variant.name)
    if model:  # read by the vLLM plugin in every process the engine starts, and by the probe
        env[device_settings.ENV] = device_settings.to_env(model, ledger)
        plugins = env.get("VLLM_PLUGINS")
        if plugins is not None and device_settings.PLUGIN_NAME not in plugins.split(","):
            env["VLLM_PLUGINS"] = ",".join(filter(None, [plugins, device_settings.PLUGIN_NAME]))
    else:
        env.pop(device_settings.ENV, None)
    env["PYTHONUNBUFFERED"] = "1"
    # another interpreter (another vLLM build) must still find this harness
    env["PYTHONPATH"] = os.pathsep.join([str(HARNESS_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def interpreter(variant: Variant) -> str:
    """The Python that runs a variant's workers (its own vLLM build, or this one)."""
    return variant.python or sys.executable

