"""Throwaway material for the bisect tests: a git repository of a tiny pure-Python engine package
whose teardown breaks at a chosen commit, the simulated-device scenario that calls that teardown,
small wheels in a local package folder, and the bisect commands as the command line runs them.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Iterable

ROOT = Path(__file__).resolve().parents[2]

# The engine's teardown, as its test suite's runner would call it: the fixed sequence.
GOOD_TEARDOWN = '''\
"""fakeengine's teardown: shut the engine down, clean up, wait until the memory is back."""
from harness.worker import teardown


def cleanup(ctx):
    if ctx.llm is not None:
        ctx.llm.llm_engine.engine_core.shutdown()
    ctx.llm = None
    ctx.backend.cleanup_dist_env()
    teardown.wait_memory(ctx, {"timeout_s": 20})
'''

# The regression: the cleanup was dropped, the engine is left to the (frozen) garbage collector.
BAD_TEARDOWN = '''\
"""fakeengine's teardown."""


def cleanup(ctx):
    ctx.llm = None
'''

# Run by the test recipe in each worktree: fails where the commit is marked unbuildable.
BUILD_PY = '''\
import os, sys, time
if os.environ.get("FAKEENGINE_SLOW_BUILD"):
    open(os.environ["FAKEENGINE_SLOW_BUILD"], "w").write(str(os.getpid()))
    print("building slowly", flush=True)
    time.sleep(120)
if os.path.exists("BROKEN"):
    sys.exit("error: this commit does not build")
print("built")
'''

SCENARIO = '''\
version: 1
name: fakeengine
description: three engines back-to-back on a simulated device, torn down by fakeengine's own code
backend: sim
platform: rocm
sim: {total_gib: 8, baseline_gib: 0.25, weights_gib: 1, release_delay_s: 0.5}
timeouts: {step: 60, worker_start: 60, stop_grace: 2}
defaults: {gpu_memory_utilization: 0.8}
teardown_profiles:
  engine: [{call: fakeengine.teardown:cleanup}]
variants:
  engine_teardown: {profile: engine, description: the engine's own teardown (the one bisected)}
  with_fix: {profile: fixed}
baseline: engine_teardown
steps:
  - {name: first}
  - {name: second}
  - {name: third}
'''

# What the recipe of the tests does: build.py (may fail), then the worktree on the env's path.
RECIPE_ARGS = ["--recipe", "{python} build.py", "--recipe", "pythonpath"]

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com", "GIT_CONFIG_NOSYSTEM": "1"}


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-c", "init.defaultBranch=main", *args], cwd=repo, check=True, text=True,
                          capture_output=True, env={**os.environ, **GIT_ENV})
    return done.stdout.strip()


def write_scenario(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "fakeengine.yaml"
    path.write_text(SCENARIO, encoding="utf-8")
    return path


def package_files(version: str, bad: bool) -> dict[str, str]:
    """The fakeengine package at one version."""
    return {"fakeengine/__init__.py": f'__version__ = "{version}"\n',
            "fakeengine/teardown.py": BAD_TEARDOWN if bad else GOOD_TEARDOWN}


def engine_files(version: str, bad: bool, broken: bool = False) -> dict[str, str | None]:
    """The repository's files at one commit (None: the file does not exist there)."""
    return {**package_files(version, bad), "build.py": BUILD_PY, "BROKEN": "marker\n" if broken else None}


def commit_files(repo: Path, files: dict[str, str | None], message: str) -> str:
    for name, text in files.items():
        path = repo / name
        if text is None:
            path.unlink(missing_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def make_engine_repo(path: Path, n: int, first_bad: int, unbuildable: Iterable[int] = ()) -> list[str]:
    """A repository of n commits (old to new); the teardown is broken from commit `first_bad` on,
    and the commits in `unbuildable` fail to build. Returns the shas."""
    path.mkdir(parents=True)
    git(path, "init", "-q")
    unbuildable = set(unbuildable)
    return [commit_files(path, engine_files(f"0.{i}", i >= first_bad, i in unbuildable),
                         f"commit {i}" + (": drop the engine cleanup" if i == first_bad else ""))
            for i in range(n)]


def dirty(repo: Path, staged: tuple[str, str] = ("fakeengine/__init__.py", '__version__ = "staged"\n'),
          unstaged: str = "build.py") -> None:
    """Leave the user's checkout as people do: a staged change (path, text), an unstaged one, an
    untracked file."""
    (repo / staged[0]).write_text(staged[1], encoding="utf-8")
    git(repo, "add", staged[0])
    (repo / unstaged).write_text("# work in progress\n", encoding="utf-8")
    (repo / "notes.txt").write_text("untracked\n", encoding="utf-8")


def snapshot(repo: Path) -> dict[str, str]:
    """Everything of the user's checkout a bisection must leave exactly as it was."""
    return {"branch": git(repo, "symbolic-ref", "-q", "HEAD"), "head": git(repo, "rev-parse", "HEAD"),
            "status": git(repo, "status", "--porcelain", "--untracked-files=all"),
            "staged": git(repo, "diff", "--cached"), "unstaged": git(repo, "diff"),
            "branches": git(repo, "for-each-ref", "refs/heads", "refs/tags"),
            "files": "\n".join(sorted(str(p.relative_to(repo)) for p in repo.rglob("*") if ".git" not in p.parts))}


# --------------------------------------------------------------------------- wheels
def make_wheel(folder: Path, name: str, version: str, files: dict[str, str],
               requires: Iterable[str] = ()) -> Path:
    """A pure-Python wheel written directly as the zip file it is."""
    folder.mkdir(parents=True, exist_ok=True)
    dist = f"{name.replace('-', '_')}-{version}"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires)
    contents = {**files, f"{dist}.dist-info/METADATA": meta,
                f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
                                           "Tag: py3-none-any\n"}
    record = "".join(f"{k},sha256={_digest(v)},{len(v.encode())}\n" for k, v in contents.items())
    path = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for k, v in contents.items():
            z.writestr(k, v)
        z.writestr(f"{dist}.dist-info/RECORD", record + f"{dist}.dist-info/RECORD,,\n")
    return path


def _digest(text: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()


# --------------------------------------------------------------------------- the command line
def entry_argv() -> list[str]:
    """How to start `bisect`/`bisect-step` as a program: run.py once cli.py knows the commands."""
    from harness import cli

    if "bisect" in getattr(cli, "SUBCOMMANDS", ()):
        return [sys.executable, str(ROOT / "run.py")]
    return [sys.executable, "-m", "tests.bisect_fixtures.entry"]


def main(argv: list[str]) -> int:
    """`bisect`/`bisect-step` in this process, with cli.main's handling of errors."""
    from harness import cli

    if "bisect" in getattr(cli, "SUBCOMMANDS", ()):
        return cli.main(argv)
    from .entry import main as entry_main

    return entry_main(argv)
