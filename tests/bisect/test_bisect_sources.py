"""Revision sources and cached environments, against real git repositories, venvs and pip (offline)."""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import pytest

from harness.bisect import envs, git as gitmod, sources
from harness.bisect.envs import BuildFailed, EnvCache
from harness.errors import InputError
from tests.bisect_fixtures import (commit_files, dirty, git, make_engine_repo, make_wheel, package_files,
                                   snapshot)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> EnvCache:
    monkeypatch.setenv(envs.CACHE_ENV, str(tmp_path / "cache"))
    return EnvCache(envs.cache_root(), timeout_s=120)


def python_says(python: Path, code: str) -> str:
    return subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True).stdout.strip()


# --------------------------------------------------------------------------- versions
OFFERED = ["0.19.1", "0.20.0", "0.20.1", "0.21.0rc1", "0.21.0", "0.22.0", "0.23.0", "0.24.0"]


def test_a_range_is_expanded_from_what_is_offered_without_prereleases():
    assert sources.expand_versions("0.20.0..0.22.0", lambda: OFFERED) == ["0.20.0", "0.20.1", "0.21.0", "0.22.0"]
    assert "0.21.0rc1" in sources.expand_versions("0.20.0..0.22.0", lambda: OFFERED, pre=True)


def test_a_comma_list_is_taken_as_given_in_version_order():
    assert sources.expand_versions("0.22.0, 0.21.0,0.22.0", lambda: pytest.fail("no index needed")) == \
        ["0.21.0", "0.22.0"]


def test_a_range_end_that_is_not_offered_is_an_input_error():
    with pytest.raises(InputError, match=r"0\.20\.5 is not offered"):
        sources.expand_versions("0.20.5..0.22.0", lambda: OFFERED)
    with pytest.raises(InputError, match="not a version"):
        sources.expand_versions("latest..0.22.0", lambda: OFFERED)


def test_versions_are_read_from_the_file_names_in_a_find_links_folder(tmp_path):
    for v in ("1.0", "1.2", "1.10"):
        make_wheel(tmp_path, "fake-engine", v, {})
    (tmp_path / "fake_engine-1.1.tar.gz").write_bytes(b"")
    make_wheel(tmp_path, "other", "9.0", {})
    (tmp_path / "README").write_text("not a distribution")
    assert sources.offered_versions("Fake.Engine", (), [str(tmp_path)]) == ["1.0", "1.1", "1.2", "1.10"]


def test_versions_come_from_pip_index_versions_without_a_find_links_folder(tmp_path):
    for v in ("1.0", "1.1"):
        make_wheel(tmp_path, "fakeengine", v, {})
    pip_args = ("--no-index", f"--find-links={tmp_path}", "--no-deps")  # --no-deps is not an index option
    assert sources.index_args(pip_args) == ["--no-index", f"--find-links={tmp_path}"]
    assert sources.offered_versions("fakeengine", pip_args, []) == ["1.0", "1.1"]


def test_find_links_folders_are_found_in_pip_arguments():
    assert sources.find_links(("--no-index", "--find-links", "/a", "-f", "/b", "--find-links=/c")) == \
        ["/a", "/b", "/c"]


# --------------------------------------------------------------------------- environments
def test_an_env_is_built_once_and_then_reused(cache, tmp_path):
    calls = []

    def install(env, log):
        calls.append(env.path)
        (env.site_packages / "marker.py").write_text("X = 1\n")

    first = cache.ensure(cache.key("rev", 1), install, tmp_path / "build.log", announce=lambda s: None)
    again = cache.ensure(cache.key("rev", 1), install, tmp_path / "build.log", announce=lambda s: None)
    assert first == again and len(calls) == 1
    assert calls[0] != first.path, "built under a temporary name, then renamed"
    assert python_says(first.python, "import marker; print(marker.X)") == "1"
    assert cache.key("rev", 1) != cache.key("rev", 2), "the recipe is part of the key"


@pytest.mark.parametrize("failure", [BuildFailed("pip failed"), KeyboardInterrupt()])
def test_a_failed_or_interrupted_build_leaves_nothing_to_reuse(cache, tmp_path, failure):
    def install(env, log):
        (env.site_packages / "half.py").write_text("")
        raise failure

    with pytest.raises(type(failure)):
        cache.ensure("rev-x", install, tmp_path / "build.log", announce=lambda s: None)
    assert list((cache.root / "envs").iterdir()) == []
    rebuilt = []
    cache.ensure("rev-x", lambda env, log: rebuilt.append(1), tmp_path / "build.log", announce=lambda s: None)
    assert rebuilt == [1], "the next bisection builds it again"


def test_a_dead_builders_partial_env_is_cleared(cache, tmp_path):
    partial = cache.root / "envs" / ".partial-999999999-rev-y"
    partial.mkdir(parents=True)
    cache.ensure("rev-y", lambda env, log: None, tmp_path / "build.log", announce=lambda s: None)
    assert not partial.exists()


def test_a_release_is_pip_installed_into_its_own_env(cache, tmp_path):
    index = tmp_path / "index"
    make_wheel(index, "fakeengine", "1.0", package_files("1.0", bad=False))
    make_wheel(index, "fakeengine", "1.1", package_files("1.1", bad=False), requires=["no-such-dependency"])
    source = sources.ReleaseSource("fakeengine", ["1.0", "1.1"], ("--no-index", "--find-links", str(index)), cache)
    good, broken = source.revisions()
    python = source.build(good, tmp_path / "good.log", announce=lambda s: None)
    assert python_says(python, "import fakeengine; print(fakeengine.__version__)") == "1.0"
    with pytest.raises(BuildFailed, match="pip install fakeengine==1.1 failed") as e:
        source.build(broken, tmp_path / "broken.log", announce=lambda s: None)
    assert "no-such-dependency" in e.value.log.read_text()


# --------------------------------------------------------------------------- git
@pytest.fixture
def repo(tmp_path) -> tuple[Path, list[str]]:
    path = tmp_path / "repo"
    return path, make_engine_repo(path, 5, first_bad=3, unbuildable=[1])


def test_the_range_is_the_first_parent_line_from_old_to_new(tmp_path, repo):
    path, shas = repo
    git(path, "checkout", "-q", "-b", "side", shas[1])
    side = commit_files(path, {"side.txt": "x"}, "side work")
    git(path, "checkout", "-q", "main")
    git(path, "-c", "user.name=t", "-c", "user.email=t@e", "merge", "-q", "--no-ff", "-m", "merge side", "side")
    merge = git(path, "rev-parse", "HEAD")
    commits = gitmod.Repo(path).first_parent_path(shas[0], "main")
    assert [c.sha for c in commits] == [*shas, merge] and side not in [c.sha for c in commits]
    assert commits[-1].subject == "merge side"


def test_a_range_whose_old_end_is_not_an_ancestor_is_refused(repo):
    path, shas = repo
    with pytest.raises(InputError, match="not an ancestor"):
        gitmod.Repo(path).first_parent_path(shas[3], shas[1])
    with pytest.raises(InputError, match="no commit 'nope'"):
        gitmod.Repo(path).first_parent_path("nope", shas[1])
    with pytest.raises(InputError, match="not a git checkout"):
        gitmod.Repo(path.parent)


def test_worktrees_are_detached_cached_and_leave_the_checkout_alone(tmp_path, repo):
    path, shas = repo
    dirty(path)
    before = snapshot(path)
    r = gitmod.Repo(path)
    wt = r.worktree(shas[2], tmp_path / "wts")
    assert (wt / "fakeengine" / "__init__.py").read_text() == '__version__ = "0.2"\n'
    assert git(wt, "rev-parse", "HEAD") == shas[2] and git(wt, "branch", "--show-current") == ""
    (wt / "build-output.so").write_text("")  # build outputs do not make a worktree stale
    assert r.worktree(shas[2], tmp_path / "wts") == wt and (wt / "build-output.so").exists()
    (wt / "fakeengine" / "__init__.py").write_text("tampered")
    r.worktree(shas[2], tmp_path / "wts")
    assert (wt / "fakeengine" / "__init__.py").read_text() == '__version__ = "0.2"\n'
    assert snapshot(path) == before


def test_a_recipe_installs_the_worktree_and_a_failing_one_is_a_build_failure(cache, tmp_path, repo):
    path, shas = repo
    recipe = sources.Recipe.parse(["{python} build.py", "pythonpath"], None, ())
    source = sources.CommitSource(gitmod.Repo(path), shas[0], shas[-1], recipe, cache)
    revs = source.revisions()
    assert [r.key for r in revs] == shas and revs[3].detail == "commit 3: drop the engine cleanup"
    python = source.build(revs[2], tmp_path / "b2.log", announce=lambda s: None)
    assert python_says(python, "import fakeengine; print(fakeengine.__version__)") == "0.2"
    with pytest.raises(BuildFailed, match="this commit does not build"):
        source.build(revs[1], tmp_path / "b1.log", announce=lambda s: None)


def test_recipe_placeholders_expand_to_arguments(cache, tmp_path):
    recipe = sources.Recipe.parse(["{python} -c 'import sys; print(sys.argv[1:])' {short} {pip_args} x{commit}"],
                                  None, ("--no-index", "-q"))
    env = cache.ensure("p", lambda env, log: recipe.install(env, tmp_path, "ab" * 20, cache, log),
                       tmp_path / "p.log", announce=lambda s: None)
    assert "['ababababab', '--no-index', '-q', 'x" + "ab" * 20 + "']" in (tmp_path / "p.log").read_text()
    assert env.python.exists()


def test_wheel_url_needs_a_commit_placeholder_and_no_worktree():
    recipe = sources.Recipe.parse(None, "https://wheels.example/{commit}/vllm-1.0-py3-none-any.whl", ())
    assert not recipe.needs_worktree
    assert sources.Recipe.parse(None, None, ()).steps == (sources.EDITABLE,)
    with pytest.raises(InputError, match="no {commit}"):
        sources.Recipe.parse(None, "https://wheels.example/latest.whl", ())


def test_a_wheel_bisections_test_tree_is_exported_without_the_source_package(cache, tmp_path):
    """A wheel installs no checkout: the tests come from an export (no worktree registered), so
    the revision's source package cannot shadow the wheel on sys.path."""
    repo = tmp_path / "repo"
    shas = make_engine_repo(repo, 2, first_bad=99)
    commit_files(repo, {"tests/test_x.py": "def test_x():\n    pass\n"}, "tests")
    recipe = sources.Recipe.parse(None, "https://wheels.example/{commit}/vllm-1.0-py3-none-any.whl", ())
    source = sources.CommitSource(gitmod.Repo(repo), shas[0], git(repo, "rev-parse", "HEAD"), recipe, cache)
    rev = source.revisions()[-1]
    tree = source.tree(rev, tmp_path / "trees", ["tests/test_x.py"])
    assert tree == tmp_path / "trees" / rev.key
    assert (tree / "tests" / "test_x.py").is_file() and (tree / "build.py").is_file()
    assert not (tree / "fakeengine").exists()
    assert git(repo, "worktree", "list").count("\n") == 0  # the user's checkout only


def test_a_pr_is_its_merge_base_to_its_head_fetched_without_touching_the_checkout(tmp_path):
    upstream = tmp_path / "upstream"
    shas = make_engine_repo(upstream, 3, first_bad=99)
    git(upstream, "checkout", "-q", "-b", "pr-branch")
    pr_commits = [commit_files(upstream, {"pr.txt": f"{i}"}, f"pr commit {i}") for i in range(2)]
    git(upstream, "update-ref", "refs/pull/7/head", pr_commits[-1])
    git(upstream, "checkout", "-q", "main")
    main_later = commit_files(upstream, {"later.txt": "x"}, "main moves on")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(upstream), str(clone))
    dirty(clone)
    before = snapshot(clone)
    r = gitmod.Repo(clone)
    assert sources.pr_range(r, pr=7, branch=None, remote="origin", base="main") == (shas[-1], pr_commits[-1])
    assert sources.pr_range(r, pr=None, branch="origin/pr-branch", remote="origin", base="main") == \
        (shas[-1], pr_commits[-1])
    assert r.resolve("origin/main") == main_later
    assert snapshot(clone) == before


def test_a_recipe_that_cannot_be_split_is_an_input_error_at_once():
    with pytest.raises(InputError, match="--recipe: .*No closing quotation"):
        sources.Recipe.parse(["{pip} install 'unterminated"], None, ())


def test_with_find_fix_the_bad_revision_is_the_old_end(cache, repo):
    from harness.bisect import bisector, command

    path, shas = repo
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args(["s.yaml", "--repo", str(path), "--good", shas[4], "--bad", shas[1], "--find", "fix",
                              "--recipe", "pythonpath"])
    source = command.make_source(args, bisector.FIX)
    assert [r.key for r in source.revisions()] == shas[1:]
    resume = command.resume_command(args, source, bisector.FIX, *source.revisions()[1:3])
    assert f"--bad {shas[2]} --good {shas[3]} --recipe pythonpath" in resume and resume.endswith("--find fix")
