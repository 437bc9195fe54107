"""The pytest-suite worker: one ``pytest.main`` session over upstream's test files, in the rootdir,
inside the variant's interpreter, back-to-back as upstream's CI runs them, with `plugin` loaded.

Nothing in the checkout is written: no bytecode, no ``.pytest_cache``. The harness's own pytest
plugin (``teardown_harness``) is switched off in the session; it collects scenario files, not tests.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from harness import events as vocab
from harness import backends
from harness.worker.steps import StepRunner
from harness.worker.stream import Events


def _git_out(rootdir: str, *args: str) -> str:
    """What git prints in the checkout; empty outside git or when git fails."""
    if not (Path(rootdir) / ".git").exists():
        return ""
    try:
        out = subprocess.run(["git", "-C", rootdir, *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def checkout_ref(rootdir: str) -> str:
    """The commit the checkout is at (its code revision in history.jsonl); empty outside git."""
    return _git_out(rootdir, "rev-parse", "HEAD")


def checkout_version(rootdir: str) -> str:
    """The vLLM version of a checkout: its generated ``vllm/_version.py``, else ``git describe``."""
    version_py = Path(rootdir) / "vllm" / "_version.py"
    if version_py.is_file():
        m = re.search(r"""(?:__version__|version)\s*(?::\s*str\s*)?=\s*['"]([^'"]+)['"]""",
                      version_py.read_text(encoding="utf-8", errors="replace"))
        if m:
            return m.group(1)
    return _git_out(rootdir, "describe", "--tags", "--always") or "unknown"


def pytest_args(spec: dict[str, Any]) -> list[str]:
    return ["--rootdir", spec["rootdir"], "-p", "no:cacheprovider", "-p", "no:teardown_harness", *spec["args"]]


def main(plan: dict[str, Any]) -> int:
    """Inside the worker: one pytest session over the plan's files, events as a steps worker's."""
    spec = plan["pytest"]
    os.environ.update(spec["env"])  # before anything imports huggingface_hub, which reads HF_HOME once
    if spec.get("hub"):
        os.environ["HF_HOME"] = spec["hub"]["root"]
    sys.dont_write_bytecode = True
    events = Events(plan["events"], plan["variant"], plan["repeat"])
    backend = backends.load(plan)  # imports vllm
    import pytest

    from harness.upstream.builds import Recorder, TaggedEvents
    from harness.upstream.patches import Patches
    from harness.upstream.plugin import UpstreamPlugin

    tagged = TaggedEvents(events)
    runner = StepRunner(plan, tagged, backend)
    readings = runner.probe.read(runner.devices)
    events.emit(vocab.WORKER_START, pid=os.getpid(), info={
        **backend.info(), "devices": runner.devices, "total_bytes": sum(t for _, t in readings),
        "rootdir": spec["rootdir"], "checkout_vllm_version": checkout_version(spec["rootdir"]),
        "checkout_ref": spec.get("checkout_ref") or checkout_ref(spec["rootdir"]),
        "pytest_version": pytest.__version__, "python_executable": sys.executable})
    recorder = Recorder(plan, runner, tagged)
    plugin = UpstreamPlugin(recorder, Patches(recorder, native=bool(spec.get("native"))))
    os.chdir(spec["rootdir"])
    try:
        code = pytest.main(pytest_args(spec), plugins=[plugin])
    finally:
        if runner.lazy:
            runner.lazy.close()
    events.emit(vocab.WORKER_END, pytest_exit=int(code))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # as the step worker: vLLM's atexit hooks can hang; everything is written
