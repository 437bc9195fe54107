"""A test tree at a git revision: a variant's ``ref:``, or a revision a bisection tests.

The revision is resolved in the repository that holds the rootdir, and its tree is exported with
``git archive`` (read from the object store, extracted by `tarfile`) into a folder of the run.
Nothing is written to the repository: no worktree is registered, no ref moves, the index and the
work tree are not read, so the user's checkout is the same after a run, whatever stops it (Ctrl-C,
``kill -9``). A half-exported tree never looks finished: it is extracted under a temporary name and
renamed into place.

Exported are the rootdir's top-level files (``pyproject.toml``: pytest's configuration), its
``tests/`` folder and the folders the test paths of ``pytest.args`` start with. vLLM's own package
(``vllm/``) is left out on purpose: the variant's interpreter brings its vLLM, and a source tree
without its compiled kernels must not shadow it on ``sys.path``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness.errors import InfrastructureError

GIT_TIMEOUT_S = 600
#: pytest options whose next argument is a value, not a test path
VALUE_OPTIONS = frozenset({"-k", "-m", "-p", "-o", "-c", "-W", "--rootdir", "--deselect", "--ignore",
                           "--ignore-glob", "--junitxml", "--junit-xml", "--confcutdir", "--basetemp",
                           "--maxfail", "--tb", "--durations", "--log-level", "--override-ini", "-n",
                           "--dist", "--timeout", "--import-mode", "--junit-prefix", "--capture"})


class NotARepository(ValueError):
    """The rootdir a ref is to be resolved in is not inside a git repository."""


class NoSuchRevision(ValueError):
    """The ref does not name a commit of the repository."""


@dataclass(frozen=True)
class Revision:
    repo: Path  # the repository's top level
    prefix: str  # the rootdir inside it ("" at the top, else "sub/dir/")
    ref: str  # as given
    sha: str  # the full commit id


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    try:
        return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=GIT_TIMEOUT_S, check=False)
    except FileNotFoundError:
        raise InfrastructureError("git is not installed (or not on PATH)") from None


def resolve(rootdir: Path, ref: str) -> Revision:
    """The commit `ref` names in the repository holding `rootdir`."""
    top = _git(rootdir, "rev-parse", "--show-toplevel", "--show-prefix")
    if top.returncode != 0:
        raise NotARepository(f"{rootdir} is not in a git repository, so a ref cannot be resolved there")
    repo, _, prefix = top.stdout.partition("\n")
    sha = _git(rootdir, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").stdout.strip()
    if not sha:
        raise NoSuchRevision(f"{ref!r} is no commit of {repo}")
    return Revision(Path(repo), prefix.strip(), ref, sha)


def test_paths(args: list[str] | tuple[str, ...]) -> list[str]:
    """The test files and folders among pytest's arguments (``tests/x.py::test_y`` -> ``tests/x.py``)."""
    paths, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg.startswith("-"):
            skip = arg in VALUE_OPTIONS
        else:
            paths.append(arg.split("::", 1)[0].rstrip("/"))
    return [p for p in paths if p and not os.path.isabs(p)]


def missing(rev: Revision, args) -> list[str]:
    """The test paths of `args` that the revision's tree lacks."""
    out = []
    for path in test_paths(args):
        if _git(rev.repo, "cat-file", "-e", f"{rev.sha}:{rev.prefix}{path}").returncode != 0:
            out.append(path)
    return out


def export(rev: Revision, dest: Path, args) -> Path:
    """The revision's tree (top-level files, ``tests/``, the folders `args` name) at `dest`,
    reused when a finished export is there already."""
    if dest.is_dir():
        return dest
    tree = f"{rev.sha}:{rev.prefix}" if rev.prefix else rev.sha
    listing = _git(rev.repo, "ls-tree", "-z", tree)
    if listing.returncode != 0:
        raise InfrastructureError(f"{rev.repo}: git ls-tree {rev.sha[:10]}: {listing.stderr.strip()[-300:]}")
    wanted = {"tests"} | {p.split("/", 1)[0] for p in test_paths(args)}
    names = []
    for entry in filter(None, listing.stdout.split("\0")):
        meta, _, name = entry.partition("\t")
        if meta.split()[1] == "blob" or name in wanted:
            names.append(name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        env = {**os.environ, "LC_ALL": "C"}
        with subprocess.Popen(["git", "archive", "--format=tar", tree, "--", *names], cwd=rev.repo, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                tar.extractall(tmp, filter="data")
            err = proc.stderr.read().decode("utf-8", "replace")
        if proc.returncode != 0:
            raise InfrastructureError(f"{rev.repo}: git archive {rev.sha[:10]}: {err.strip()[-300:]}")
        os.replace(tmp, dest)
    except (OSError, tarfile.TarError) as e:
        raise InfrastructureError(f"{dest}: cannot export {rev.sha[:10]} of {rev.repo}: {e}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
