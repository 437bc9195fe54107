"""Plan a pytest-suite scenario: where the checkout is, what the workers change, and say so first.

The checkout comes from ``pytest.rootdir`` (``${VAR}`` expanded) or ``--vllm-src DIR``. Without a
model hub (a CPU rehearsal, or ``--model``), every hub name the tests ask for resolves to one local
model through a private ``HF_HOME`` of the run; engine arguments the CPU refuses are mapped. The
teardown of upstream's runners is the variant's profile, so upstream's own cleanup between tests is
turned off. Every such change is a `Substitution`, printed before anything runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from harness.errors import HarnessError, ScenarioError
from harness.model import Substitution
from harness.scenario.suite import VAR
from harness.upstream.hfhome import config_changes

#: vLLM-CPU's attention refuses other block sizes; upstream's VllmRunner passes 16.
CPU_BLOCK_MULTIPLE = 32
#: upstream's VllmRunner asks for max_model_len=1024; the seeded model must allow more.
MIN_POSITIONS = 2048
#: upstream's fixture that waits for memory before, and empties the cache after, every test.
CLEAN_GPU_ENV = "VLLM_TEST_CLEAN_GPU_MEMORY"


def resolve_rootdir(scenario, vllm_src: str | os.PathLike | None = None,
                    environ: dict[str, str] | None = None) -> Path:
    """The checkout, absolute; `ScenarioError` naming ``pytest.rootdir`` when it cannot be found."""
    environ = os.environ if environ is None else environ
    raw = scenario.pytest.rootdir
    if vllm_src is not None:
        root, where = Path(vllm_src).expanduser(), "--vllm-src"
    else:
        missing = [m.group(1) for m in VAR.finditer(raw) if not environ.get(m.group(1))]
        if missing:
            raise ScenarioError(scenario.path, "pytest.rootdir",
                                f"{raw!r}: ${{{missing[0]}}} is not set; set it or give --vllm-src DIR")
        root = Path(VAR.sub(lambda m: environ[m.group(1)], raw)).expanduser()
        if not root.is_absolute():
            root = scenario.path.parent / root
        where = None
    if not root.is_dir():
        what = f"--vllm-src {vllm_src}" if where else f"{raw!r} ({root})"
        raise ScenarioError(scenario.path, "pytest.rootdir", f"{what}: no such directory (a vLLM checkout)")
    return root.resolve()


def plan(sc, *, backend: str, host_platform: str, vllm_src=None, model: str | None = None,
         tiny_model: Callable[[], Path]) -> tuple[dict[str, Any], list[Substitution]]:
    """The run's ``pytest`` section (each worker plan's, before `worker_section` adds the variant's
    part) and the substitutions it makes; ``tiny_model`` builds the local model a rehearsal seeds
    the private model cache with when ``model`` (--model) is not given."""
    if backend != "vllm":
        raise HarnessError(f"{sc.path}: backend: a pytest suite runs on the real vLLM, not '{backend}'")
    root = resolve_rootdir(sc, vllm_src)
    subs: list[Substitution] = []
    rehearsal = host_platform == "cpu" and sc.platform not in ("cpu", "any")
    hub = None
    if model is not None or rehearsal:
        source = _local_model(sc, model, tiny_model)
        hub = {"source": str(source), "min_positions": MIN_POSITIONS}
        why = "--model" if model is not None else "no model hub here"
        subs.append(Substitution("model", "every hub name the tests ask for", str(source),
                                 f"{why}: a private HF_HOME of the run seeded with it, HF_HUB_OFFLINE=1"))
        for key, before, after in config_changes(source, MIN_POSITIONS):
            subs.append(Substitution(key, before, after, "upstream's VllmRunner asks for max_model_len=1024"))
    cpu = host_platform == "cpu"
    if cpu:
        subs.append(Substitution("block_size", "not a multiple of 32 (VllmRunner: 16)",
                                 "the next multiple of 32", "vLLM on CPU: attention needs a multiple of 32"))
    subs.append(Substitution("VllmRunner.__exit__ / HfRunner.__exit__", "upstream's", "the variant's profile",
                             "the profile is the teardown"))
    subs.append(Substitution("cleanup_fixture", "cleanup_dist_env_and_memory() after every test",
                             "off (skip_global_cleanup on every test)", "the profile is the teardown"))
    subs.append(Substitution(f"env {CLEAN_GPU_ENV}", os.environ.get(CLEAN_GPU_ENV, "unset"), "0",
                             "upstream's memory wait and empty_cache around every test off: the profile is the teardown"))
    env = {CLEAN_GPU_ENV: "0"}
    if hub is not None:
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        subs.append(Substitution("env HF_HOME", os.environ.get("HF_HOME", "unset"), "<run directory>/hf_home",
                                 "the run's private model cache"))
    section = {"rootdir": str(root), "args": list(sc.pytest.args), "hub": hub, "env": env,
               "block_multiple": CPU_BLOCK_MULTIPLE if cpu else None, "timeout_s": sc.timeouts.step}
    return section, subs


def _local_model(scenario, model: str | None, tiny_model: Callable[[], Path]) -> Path:
    if model is None:
        return tiny_model()
    path = Path(model).expanduser()
    if not (path / "config.json").is_file():
        raise HarnessError(f"{scenario.path}: --model {model}: a pytest suite needs a local model directory "
                           "(with config.json) to seed the run's model cache with")
    return path.resolve()


def worker_section(suite: dict[str, Any], variant, run_dir: Path) -> dict[str, Any]:
    """The ``pytest`` section of one worker plan from the run's (`plan`); the model cache lives in
    the run directory, and the variant's ``engine:`` overrides go to every engine the tests build."""
    section = {**suite, "engine": dict(variant.engine)}
    if section["hub"] is not None:
        section["hub"] = {**section["hub"], "root": str(run_dir / "hf_home")}
    return section
