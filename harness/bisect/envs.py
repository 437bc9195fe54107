"""Cached environments: one virtual environment per revision, built once, reused for ever after.

    $HARNESS_CACHE (default ~/.cache/vllm-teardown-harness)/
        envs/<label>-<digest>/          a venv; <digest> covers everything that decides its contents
        envs/.partial-<pid>-<label>-<digest>/   one being built (a dead pid's is removed)
        worktrees/<repo>-<digest>/<sha>/        detached git worktrees (sources.py)

An environment is built under a temporary name and renamed into place only when its install
succeeded, so an interrupted or failed build is never mistaken for a finished one. Only the
environment's `bin/python` is used afterwards (console scripts would still name the temporary path).

Venvs are made without pip (ensurepip takes seconds per venv); packages go in through the harness's
own pip with `pip --python ENV_PYTHON` (pip >= 22.3).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import psutil

from harness.run import procs
from harness.errors import InfrastructureError

CACHE_ENV = "HARNESS_CACHE"
VENV_TIMEOUT_S = 600


class BuildFailed(Exception):
    """Installing a revision failed: the revision is skipped. `log` holds the build's output."""

    def __init__(self, message: str, log: Path | None = None):
        super().__init__(message)
        self.log = log


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "vllm-teardown-harness")


def digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:10]


@dataclass(frozen=True)
class Env:
    path: Path

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def site_packages(self) -> Path:
        return next((self.path / "lib").glob("python*/site-packages"))

    def pip(self) -> list[str]:
        """A pip command that installs into this environment."""
        return [sys.executable, "-m", "pip", "--python", str(self.python), "--disable-pip-version-check"]


@dataclass(frozen=True)
class EnvCache:
    root: Path
    base_python: str = sys.executable  # the interpreter the venvs are made from
    system_site_packages: bool = False  # see the base interpreter's packages (the GPU node's torch)
    timeout_s: float = 3600.0

    def identity(self) -> dict:
        """What every env of this cache shares, beyond its own recipe."""
        return {"base_python": self.base_python, "system_site_packages": self.system_site_packages}

    def key(self, label: str, *recipe) -> str:
        """Directory name of the env for `label` built by `recipe` (anything JSON-able)."""
        safe = "".join(c if c.isalnum() or c in ".-_" else "_" for c in label)[:60]
        return f"{safe}-{digest(self.identity(), *recipe)}"

    def ensure(self, key: str, install: Callable[[Env, Path], None], log: Path,
               announce: Callable[[str], None] = print) -> Env:
        """The env named `key`, built with `install(env, log)` unless it exists already.
        `install` raises BuildFailed; a build interrupted in any way leaves nothing behind."""
        envs = self.root / "envs"
        final = envs / key
        if final.is_dir():
            announce(f"  env: {final} (cached)")
            return Env(final)
        envs.mkdir(parents=True, exist_ok=True)
        _remove_abandoned(envs, key)
        tmp = envs / f".partial-{os.getpid()}-{key}"
        announce(f"  env: building {final} (log: {log})")
        try:
            self._venv(tmp, log)
            install(Env(tmp), log)
            try:
                tmp.rename(final)
            except OSError:  # another bisection finished the same env first: use theirs
                if not final.is_dir():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return Env(final)

    def _venv(self, path: Path, log: Path) -> None:
        argv = [self.base_python, "-m", "venv", "--without-pip"]
        if self.system_site_packages:
            argv.append("--system-site-packages")
        try:
            done = procs.run([*argv, str(path)], timeout=VENV_TIMEOUT_S)
        except OSError as e:
            raise InfrastructureError(f"--base-python: cannot run {self.base_python}: {e.strerror or e}") from None
        append_log(log, argv + [str(path)], done)
        if not done:
            raise InfrastructureError(f"cannot create a virtual environment with {self.base_python}: "
                                      f"{done.output.strip()[-300:]}")

    def run(self, argv: list[str], log: Path, *, cwd: Path | None = None, env: dict | None = None,
            what: str = "install") -> None:
        """One build command; its output goes to `log`; a failure is BuildFailed (skip)."""
        try:
            done = procs.run(argv, timeout=self.timeout_s, cwd=str(cwd) if cwd else None,
                             env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", **(env or {})})
        except OSError as e:  # e.g. a script the recipe names that this revision does not have
            raise BuildFailed(f"{what} failed ({argv[0]}: {e.strerror or e})", log) from None
        append_log(log, argv, done)
        if not done:
            last = (done.output.strip().splitlines() or ["(no output)"])[-1][:200]
            why = f"timed out after {self.timeout_s:g} s" if done.timed_out else f"exit {done.returncode}: {last}"
            raise BuildFailed(f"{what} failed ({why})", log)


def append_log(log: Path, argv: list[str], done: procs.Completed) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"$ {' '.join(map(str, argv))}\n{done.output}\n[{procs.exit_description(done.returncode)}"
                f"{', timed out' if done.timed_out else ''}]\n\n")


def _remove_abandoned(envs: Path, key: str) -> None:
    """Partial builds of `key` whose builder is gone (killed, power cut) only take disk space."""
    for partial in envs.glob(f".partial-*-{key}"):
        pid = partial.name.split("-")[1]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(partial, ignore_errors=True)
