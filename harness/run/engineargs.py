"""Check a scenario's engine arguments against the target vLLM before any engine is built.

A misspelt key (``gpu_memory_utilisation``) would otherwise pass `validate` and fail at
construction, minutes later on a GPU node. The names vLLM accepts are asked of the interpreter
that will run the variant (another venv may hold another vLLM): its ``EngineArgs`` dataclass fields
plus the named parameters of ``vllm.LLM.__init__``. Importing vLLM takes seconds, so the answer is
cached per interpreter, keyed on the size and mtime of the two source files it came from; a
quick probe of the interpreter checks that key.

When the interpreter has no vLLM (a machine that only validates, a sim-only venv), the check says
so plainly and lets the scenario through: nothing is claimed that was not checked. The question is
asked only of a `backend: vllm` run (the simulated device builds no vLLM engine), and an interpreter
gets the scenario's `timeouts.worker_start` to answer, as its worker would: one that hangs is named
once, and its variants' steps are not run (`Checked.hung`).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from harness import atomic
from harness.errors import InfrastructureError, ScenarioError
from harness.run import procs

MARK = "HARNESS_ENGINEARGS "
TIMEOUT_S = 180.0  # when no scenario says how long a worker may take to start

# Runs in the variant's interpreter. With the cached key as argv[1] it stops before importing vLLM.
_PROBE = r"""
import dataclasses, importlib.util, inspect, json, os, sys
def out(**kw):
    print("HARNESS_ENGINEARGS " + json.dumps(kw), flush=True)
spec = importlib.util.find_spec("vllm")
if spec is None or not spec.origin:
    out(error="has no vLLM installed"); sys.exit(0)
root = os.path.dirname(spec.origin)
files = [os.path.join(root, "engine", "arg_utils.py"), os.path.join(root, "entrypoints", "llm.py"),
         os.path.join(root, "v1", "worker", "utils.py"), os.path.join(root, "v1", "worker", "cpu_worker.py")]
key = ";".join(f"{p}:{s.st_size}:{s.st_mtime_ns}" for p in files if os.path.exists(p) for s in [os.stat(p)])
if len(sys.argv) > 1 and sys.argv[1] == key:
    out(key=key, cached=True); sys.exit(0)
import vllm
from vllm.engine.arg_utils import EngineArgs
names = {f.name for f in dataclasses.fields(EngineArgs)}
try:
    from vllm import LLM
    names |= {n for n, p in inspect.signature(LLM.__init__).parameters.items()
              if n != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
except Exception:
    pass
try:  # the points the modelled device hooks (harness/devicemodel/plugin.py): vLLM's startup check
    from vllm.v1.worker.utils import request_memory
    from vllm.v1.worker.cpu_worker import CPUWorker
    missing = [m for m in ("init_device", "load_model", "initialize_from_config") if not hasattr(CPUWorker, m)]
    startup = f"vllm.v1.worker.cpu_worker.CPUWorker has no {', '.join(missing)}" if missing else ""
except Exception as e:
    startup = f"{type(e).__name__}: {e}"
out(key=key, names=sorted(names), version=getattr(vllm, "__version__", "unknown"), startup=startup)
"""


class UnknownEngineArgument(ScenarioError):
    """An engine key the target vLLM does not accept (bisect skips such a revision)."""


@dataclass(frozen=True)
class Known:
    """What one interpreter's vLLM accepts; ``names`` is None when it could not be asked."""

    python: str
    names: frozenset[str] | None
    version: str = ""
    why_not: str = ""  # when names is None: why the check could not be made
    startup: str | None = None  # "" when the modelled device can model its startup check, else why not
    hung: bool = False  # it did not answer in time: a worker started with it would not either


@dataclass(frozen=True)
class Checked:
    """What the check found besides a refused key (raised): notes, and the variants whose interpreter
    hung, each with why (``interpreter PATH did not answer within N s ...``)."""

    notes: list[str] = field(default_factory=list)
    hung: dict[str, str] = field(default_factory=dict)


def cache_path() -> Path:
    root = os.environ.get("HARNESS_CACHE") or Path.home() / ".cache" / "vllm-teardown-harness"
    return Path(root).expanduser() / "engineargs.json"


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def ask(python: str, *, env: dict[str, str] | None = None, timeout: float = TIMEOUT_S, grace: float = 5.0) -> Known:
    """The engine argument names ``python``'s vLLM accepts (cached), or why they cannot be known."""
    python = str(python)
    path = cache_path()
    cache = _read_cache(path)
    slot = hashlib.sha256(python.encode()).hexdigest()[:16]
    entry = cache.get(slot) if isinstance(cache.get(slot), dict) else {}
    argv = [python, "-c", _PROBE] + ([entry["key"]] if entry.get("key") else [])
    if not Path(python).exists():
        return Known(python, None, why_not="the interpreter does not exist")
    try:
        done = procs.run(argv, timeout=timeout, env=env, grace=grace)
    except OSError as e:
        return Known(python, None, why_not=f"the interpreter cannot be started ({e.strerror or e})")
    lines = [ln[len(MARK):] for ln in done.output.splitlines() if ln.startswith(MARK)]
    if done.timed_out:
        return Known(python, None, why_not=f"did not answer within {timeout:g} s (timeouts.worker_start)", hung=True)
    if not lines:
        last = (done.output.strip().splitlines() or ["no output"])[-1]
        return Known(python, None, why_not=f"importing vLLM failed: {last}")
    answer = json.loads(lines[-1])
    if "error" in answer:
        return Known(python, None, why_not=answer["error"])
    if answer.get("cached"):
        return Known(python, frozenset(entry["names"]), entry.get("version", ""), startup=entry.get("startup"))
    cache[slot] = {"python": python, "key": answer["key"], "names": answer["names"], "version": answer["version"],
                   "startup": answer.get("startup")}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_json(path, cache)
    except OSError:
        pass  # a read-only home: the check still holds, it is only not remembered
    return Known(python, frozenset(answer["names"]), answer["version"], startup=answer.get("startup"))


def engine_keys(scenario) -> Iterator[tuple[str, str, str | None]]:
    """(key path, argument name, variant or None for every variant) of every engine argument."""
    for k in scenario.defaults:
        yield f"defaults.{k}", k, None
    for i, step in enumerate(scenario.steps):
        for k in step.engine:
            yield f"steps[{i}].engine.{k}", k, None
    for v in scenario.variants:
        for k in v.engine:
            yield f"variants.{v.name}.engine.{k}", k, v.name


def check(scenario, *, variants: list[str] | None = None, python: str | None = None,
          backend: str | None = None, asker: Callable[..., Known] | None = None) -> list[str]:
    """`check_all`'s notes, a hung interpreter's line among them (for `validate`)."""
    found = check_all(scenario, variants=variants, python=python, backend=backend, asker=asker)
    return found.notes + hung_lines(scenario, found)


def hung_lines(scenario, found: Checked) -> list[str]:
    """One line per interpreter that hung, naming it and the variants it was to run."""
    by_why: dict[str, list[str]] = {}
    for variant, why in found.hung.items():
        by_why.setdefault(why, []).append(variant)
    return [f"{scenario.path}: variant(s) {', '.join(names)}: {why}; their steps are not run"
            for why, names in by_why.items()]


def check_all(scenario, *, variants: list[str] | None = None, python: str | None = None,
              backend: str | None = None, asker: Callable[..., Known] | None = None) -> Checked:
    """Raise ScenarioError on the first engine argument the target vLLM does not know; return notes
    saying which interpreters could not be asked (nothing checked there), and which hung.

    ``python`` replaces every variant's interpreter (bisect's revision env, `run --python`);
    ``backend`` the scenario's (`--backend`): only vLLM's engines take these arguments."""
    if (backend or scenario.backend) != "vllm":
        return Checked()
    if asker is None:
        timeouts = scenario.timeouts
        def asker(interp: str) -> Known:
            return ask(interp, timeout=timeouts.worker_start, grace=timeouts.stop_grace)
    chosen = [v for v in scenario.variants if not variants or v.name in variants]
    by_python: dict[str, list[str]] = {}
    for v in chosen:
        by_python.setdefault(str(python or v.python or sys.executable), []).append(v.name)
    found = Checked()
    for interp, names in by_python.items():
        known = asker(interp)
        if known.hung:
            found.hung.update((n, f"interpreter {interp} {known.why_not}") for n in names)
            continue
        if known.names is None:
            found.notes.append(f"{scenario.path}: engine arguments of variant(s) {', '.join(names)} not checked: "
                               f"{interp} {known.why_not}")
            continue
        for key, arg, only in engine_keys(scenario):
            if (only is None or only in names) and arg not in known.names:
                close = difflib.get_close_matches(arg, sorted(known.names), n=1, cutoff=0.6)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise UnknownEngineArgument(scenario.path, key, f"not an engine argument of vLLM {known.version} "
                                                        f"(vllm.LLM / EngineArgs in {interp}){hint}")
    return found


def check_startup(scenario, modelled: list[str], *, python: str | None = None,
                  asker: Callable[[str], Known] = ask) -> None:
    """The modelled device wraps vLLM-CPU's worker and calls vLLM's own startup check; a vLLM
    without them (an older release, bisecting on CPU) cannot be rehearsed: one line, exit 3."""
    for v in scenario.variants:
        if v.name not in modelled:
            continue
        interp = str(python or v.python or sys.executable)
        known = asker(interp)
        if known.startup:
            raise InfrastructureError(f"{scenario.path}: variants.{v.name}: vLLM {known.version} ({interp}) cannot run "
                                      f"on the modelled device, whose startup check it lacks ({known.startup}); "
                                      "run it on a GPU, or set inject.device_model: false")
