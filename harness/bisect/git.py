"""The few git operations a bisection needs, none of which touches the user's checkout.

Revisions are checked out in detached worktrees under the cache (`git worktree add --detach`), so
the user's branch, HEAD, index and working tree stay exactly as they were, whatever happens to
the bisection. Fetching a PR head only writes objects and FETCH_HEAD.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from harness.run import procs
from harness.errors import InfrastructureError, InputError

GIT_TIMEOUT_S = 600


@dataclass(frozen=True)
class Commit:
    sha: str
    subject: str

    @property
    def short(self) -> str:
        return self.sha[:10]


class Repo:
    def __init__(self, path: str | Path):
        self.path = Path(path).resolve()
        if not self.path.is_dir() or not self._run("rev-parse", "--show-toplevel"):
            raise InputError(f"--repo: {path} is not a git checkout")

    def _run(self, *args: str, cwd: Path | None = None) -> procs.Completed:
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}  # never wait for a password
        try:
            return procs.run(["git", *args], timeout=GIT_TIMEOUT_S, cwd=str(cwd or self.path), env=env)
        except FileNotFoundError:
            raise InfrastructureError("git is not installed (or not on PATH)") from None

    def _git(self, *args: str, cwd: Path | None = None) -> str:
        done = self._run(*args, cwd=cwd)
        if not done:
            raise InputError(f"{self.path}: git {' '.join(args)}: {done.output.strip()[-300:]}")
        return done.output.strip()

    def _sha(self, ref: str) -> str:
        done = self._run("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
        return done.output.strip() if done else ""

    def has(self, ref: str) -> bool:
        return bool(self._sha(ref))

    def resolve(self, ref: str) -> str:
        sha = self._sha(ref)
        if not sha:
            raise InputError(f"{self.path}: no commit '{ref}'")
        return sha

    def first_parent_path(self, old: str, new: str) -> list[Commit]:
        """`old`, then the commits on new's first-parent line after it, up to `new` (old to new)."""
        old, new = self.resolve(old), self.resolve(new)
        if not self._run("merge-base", "--is-ancestor", old, new):
            raise InputError(f"{self.path}: {old[:10]} is not an ancestor of {new[:10]}; "
                             "the old end (--good, or --bad with --find fix) must come first")
        # the same walk as `git rev-list --first-parent --reverse old..new`, with subjects
        lines = self._git("log", "--first-parent", "--reverse", "--format=%H %s", f"{old}..{new}").splitlines()
        return [Commit(old, self.subject(old)),
                *(Commit(sha, subject) for sha, _, subject in (line.partition(" ") for line in lines))]

    def subject(self, sha: str) -> str:
        return self._git("log", "-1", "--format=%s", sha)

    def merge_base(self, a: str, b: str) -> str:
        return self._git("merge-base", a, b)

    def fetch(self, remote: str, refspec: str) -> str:
        """Fetch one ref (a PR head: pull/N/head) without creating any ref; its sha."""
        self._git("fetch", "--quiet", remote, refspec)
        return self.resolve("FETCH_HEAD")

    def worktree(self, sha: str, root: Path) -> Path:
        """A detached checkout of `sha` under `root`, reused when intact."""
        path = root / sha
        if path.is_dir() and self._intact(path, sha):
            return path
        if path.exists():  # half made (interrupted) or changed by hand: make it again
            shutil.rmtree(path)
        root.mkdir(parents=True, exist_ok=True)
        self._run("worktree", "prune")  # forget worktrees whose folders are gone (an interrupted run's)
        # --force: the path may still be registered from a worktree whose folder is gone
        done = self._run("worktree", "add", "--force", "--detach", str(path), sha)
        if not done:
            shutil.rmtree(path, ignore_errors=True)
            raise InfrastructureError(f"{self.path}: git worktree add {sha[:10]}: {done.output.strip()[-300:]}")
        return path

    def _intact(self, path: Path, sha: str) -> bool:
        head = self._run("rev-parse", "HEAD", cwd=path)
        # build outputs (untracked files) are fine; a changed tracked file is not
        status = self._run("status", "--porcelain", "--untracked-files=no", cwd=path)
        return bool(head) and head.output.strip() == sha and bool(status) and not status.output.strip()
