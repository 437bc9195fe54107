"""Command line: `main(argv) -> int`. Each subcommand maps its arguments to one plain function.

Exit codes (docs/architecture.md, contracts; README.md): 0 the verdict holds and no fixed variant's
step failed unless --allow'ed, 1 the verdict fails (or the baseline is broken, or such a failure;
`diff`: a case regressed), 2 usage or input error (nothing run), 3 infrastructure error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import traceback
from pathlib import Path

from harness import __version__
from harness.errors import HarnessError, InputError, ScenarioError
from harness.model import EXIT_INFRASTRUCTURE, EXIT_INTERRUPTED
MAX_REPEAT = 10_000  # as a scenario's `repeat:` (scenario/schema.py)
SUBCOMMANDS = ("run", "validate", "report", "diff", "classify", "bisect", "bisect-step", "bundle", "trend", "merge")


# --------------------------------------------------------------------------- subcommands
def cmd_run(args: argparse.Namespace) -> int:
    """`run.py SCENARIO.yaml`: the stages of harness/pipeline.py."""
    from harness import pipeline
    from harness.run import runner

    opts = runner.RunOptions(out=Path(args.out), backend=args.backend, variants=args.variant or None,
                             repeat=args.repeat, model=args.model, strict_platform=args.strict_platform,
                             vllm_src=args.vllm_src, early_stop=not args.no_early_stop, allow=_allow_names(args))
    return pipeline.run_scenario(pipeline.Run(Path(args.scenario), opts, step=args.step, keyword=args.k,
                                              shard=args.shard, sets=_sets(args)))


def cmd_merge(args: argparse.Namespace) -> int:
    """`run.py merge RUN_DIR...`: the shards joined, then reported."""
    from harness import pipeline
    from harness.report import console

    allow = _allow(args)  # a typo must not wait for the merge
    run_dir, summary = pipeline.merge([Path(d) for d in args.run_dirs], Path(args.out), allow)
    console.summary_table(summary)
    print(f"results: {run_dir}")
    return summary.exit_code


def cmd_validate(args: argparse.Namespace) -> int:
    from harness.run import engineargs, preflight
    from harness.scenario import schema as scenario_mod
    from harness.scenario.checker import Checker

    sets = _sets(args)
    if args.profiles:
        _print_profiles()
    elif not args.scenarios:
        raise InputError("run.py validate: the following arguments are required: SCENARIO.yaml ... (or --profiles)")
    for path in args.scenarios:
        sc = scenario_mod.load(path, sets)  # every mistake of the file's schema at once
        c = Checker(sc.path)
        for check in (preflight.check_inputs, _check_checkouts, engineargs.check):  # this machine; each variant's own vLLM
            with c.part():
                for note in check(sc) or ():
                    print(f"note: {note}", file=sys.stderr)
        c.done()
        what = f"pytest suite {' '.join(sc.pytest.args)} in {sc.pytest.rootdir}" if sc.pytest else f"{len(sc.steps)} steps"
        print(f"{path}: ok ({what}, variants: {', '.join(v.name for v in sc.variants)})")
    return 0


def _print_profiles() -> None:
    """The built-in teardown profiles, their actions, and the upstream code each reproduces."""
    from harness.scenario.profiles import BUILTIN_PROFILES, PROFILE_SOURCES

    def spell(actions) -> str:
        return ", ".join(a.name + (f" {dict(a.params)}" if a.params else "") for a in actions) or "-"

    for name, prof in BUILTIN_PROFILES.items():
        print(f"{name}: {PROFILE_SOURCES[name]}")
        print(f"    after: {spell(prof.after)}" + (f"\n    before: {spell(prof.before)}" if prof.before else ""))


def _check_checkouts(sc) -> None:
    """A pytest suite's variant refs, where its rootdir is on this machine (a ref that does not
    resolve is exit 2 here as in a run)."""
    from harness.upstream import planning

    if sc.pytest is None or not any(v.ref or v.rootdir for v in sc.variants):
        return
    try:
        root = planning.resolve_rootdir(sc)
    except ScenarioError as e:
        print(f"note: {e}; the variants' ref/rootdir were not checked", file=sys.stderr)
        return
    planning.variant_checkouts(sc, root, sc.pytest.args)


def cmd_report(args: argparse.Namespace) -> int:
    """`run.py report RUN_DIR`: the report stages again."""
    from harness import pipeline
    from harness.report import console

    run_dir = Path(args.run_dir)
    if not run_dir.exists():
        raise InputError(f"{run_dir}: no such run directory")
    summary = pipeline.report(run_dir, allow=_allow(args))
    if args.leaks:
        console.print_leaks(summary)
        return 0
    console.summary_table(summary)
    return summary.exit_code


def cmd_diff(args: argparse.Namespace) -> int:
    from harness.results import diff

    result = diff.diff_files(Path(args.baseline), Path(args.candidate))
    limit = (args.wait_regression, args.wait_factor)
    if args.json:
        print(json.dumps(diff.to_json(result, *limit), indent=2))
    else:
        print(diff.format_table(result, wait_limit=limit))
    regressed = result.counts[diff.Transition.REGRESSION] or diff.slower_teardowns(result, *limit)
    return 1 if regressed and not args.no_fail else 0


def _sets(args: argparse.Namespace):
    from harness.scenario import overrides

    return overrides.parse_all(args.set)


def _allow_names(args: argparse.Namespace) -> list[str] | None:
    from harness.results import gate

    return sorted(a.value for a in gate.parse_allow(args.allow)) or None


def _allow(args: argparse.Namespace):
    """--allow's classes; None when not given (the run's own, from run.json)."""
    from harness.results import gate

    return gate.parse_allow(args.allow) if args.allow else None


def cmd_classify(args: argparse.Namespace) -> int:
    from harness.results import classify
    from harness.xmlsafe import printable

    if args.logfile == "-":
        cls, line = classify.explain_stream(sys.stdin.buffer)
    else:
        path = Path(args.logfile)
        if path.is_file() and path.stat().st_size == 0:  # a log that was never written: nothing to classify
            raise InputError(f"{path}: empty file, nothing to classify")
        cls, line = classify.explain_file(path)
    print(cls)  # stdout holds the class alone, for scripts; why, for people, on stderr
    print(f"matched: {printable(line)[:500]}" if line else "matched: no failure and no test summary in the text",
          file=sys.stderr)
    return 0


def cmd_trend(args: argparse.Namespace) -> int:
    """`run.py trend`: the history's trend, printed (and drawn with --html)."""
    from harness import pipeline

    if args.json and not args.flaky:
        raise InputError("trend: --json goes with --flaky (the nightly table has --html)")
    if args.flaky:
        pipeline.flaky(Path(args.out), pipeline.scenario_name(args.scenario), args.nights, args.min_runs, args.json)
        return 0
    pipeline.trend(Path(args.out), pipeline.scenario_name(args.scenario), args.nights, args.recent,
                   Path(args.html) if args.html else None)
    return 0


# --------------------------------------------------------------------------- parser
class _Parser(argparse.ArgumentParser):
    """A usage error is one line naming the option, like every other input error (exit 2)."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def count(lo: int, hi: int):
    """An argparse type: a whole number in [lo, hi], refused by argparse (naming the option) before
    anything runs or is written."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value} is out of range (must be {lo}..{hi})")
        return value
    return parse


def seconds(text: str) -> float:
    """An argparse type: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is out of range (a finite number >= 0)")
    return value


def _allow_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow", action="append", metavar="CLASS,...",
                   help="failure classes that do not fail the run (e.g. assertion,timeout); "
                        "default: none (any failure besides the leak's comparison exits 1)")


def build_parser() -> argparse.ArgumentParser:
    from harness.run import select
    from harness.scenario import overrides

    parser = _Parser(prog="run.py", description="Engine-teardown memory-leak regression harness.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks")
    common = _Parser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show Python tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    _add = sub.add_parser

    def add_parser(name, **kw):
        return _add(name, parents=[common], **kw)

    sub.add_parser = add_parser  # every subcommand also takes --debug after its arguments

    p = sub.add_parser("run", help="run a scenario (the default: `run.py SCENARIO.yaml`)")
    p.add_argument("scenario")
    p.add_argument("--variant", action="append", help="run only this variant (repeatable)")
    p.add_argument("--repeat", type=count(1, MAX_REPEAT), help="override the scenario's repeat count")
    _allow_argument(p)
    p.add_argument("--no-early-stop", action="store_true",
                   help="run every repeat even when the verdict is already decided (and test at p < 0.05)")
    p.add_argument("--backend", choices=("vllm", "sim"), help="override the scenario's backend")
    p.add_argument("--out", default="results", help="results directory (default: results/)")
    p.add_argument("--model", help="replace every step's model")
    overrides.add_argument(p)
    select.add_arguments(p)
    p.add_argument("--strict-platform", action="store_true",
                   help="refuse (exit 3: this machine cannot run the job) instead of rehearsing when it lacks the "
                        "scenario's platform")
    p.add_argument("--vllm-src", metavar="DIR", help="the vLLM checkout of a pytest-suite scenario (overrides pytest.rootdir)")
    p.add_argument("--shard", metavar="K/N",
                   help="run shard K of N (from 1) of the (variant, repeat) matrix; default: from "
                        "BUILDKITE_PARALLEL_JOB/_COUNT when set (--shard 1/1 runs everything)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("merge", help="join the run directories of a run's shards into one, with report and verdict")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    _allow_argument(p)
    p.add_argument("--out", default="results", help="results directory (default: results/)")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("validate", help="check scenario files only (exit 0 or 2)")
    p.add_argument("scenarios", nargs="*")
    p.add_argument("--profiles", action="store_true",
                   help="print the built-in teardown profiles and the upstream code each reproduces")
    overrides.add_argument(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("report", help="(re)build report and verdict of a run directory")
    p.add_argument("run_dir")
    _allow_argument(p)
    p.add_argument("--leaks", action="store_true",
                   help="print the tests that left device memory behind (largest first) instead of the table")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("diff", help="diff two JUnit files (any JUnit, pytest's too)")
    p.add_argument("baseline")
    p.add_argument("candidate")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--no-fail", action="store_true",
                   help="exit 0 even when a case regressed or its teardown got slower (a report only)")
    p.add_argument("--wait-regression", type=seconds, default=10.0, metavar="S",
                   help="a case whose wait for memory (wait_s) grew by more than S seconds, and by more than "
                        "--wait-factor, is a slower teardown: exit 1 (default: 10)")
    p.add_argument("--wait-factor", type=seconds, default=2.0, metavar="F",
                   help="... and to more than F times the baseline's wait (default: 2)")
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser("classify", help="print the failure class of a log or traceback, and the line that decided it")
    p.add_argument("logfile", help="a log file, or - for standard input")
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("trend", help="pass rate and release latency per night, from results/history.jsonl")
    p.add_argument("scenario", nargs="?", help="scenario name or YAML file (default: every scenario)")
    p.add_argument("--nights", type=count(1, 100_000), default=14, help="the last N nights that have runs (default: 14)")
    p.add_argument("--recent", type=count(1, 100_000), default=3,
                   help="flag steps that failed in the last K nights after passing before (default: 3)")
    p.add_argument("--html", help="also write the trend as an HTML page with charts")
    p.add_argument("--flaky", action="store_true",
                   help="rank tests by flip rate (outcome changes between runs of the same code revision) and "
                        "failure rate instead")
    p.add_argument("--json", action="store_true", help="with --flaky: machine-readable output")
    p.add_argument("--min-runs", type=count(2, 100_000), default=5,
                   help="with --flaky: runs of one revision a test needs to be ranked (default: 5)")
    p.add_argument("--out", default="results", help="results directory holding history.jsonl (default: results/)")
    p.set_defaults(func=cmd_trend)

    from harness.bundle import cli as bundle_cli
    from harness.bisect import command as bisect_command

    p = sub.add_parser("bisect", help="find the revision where a failure started (--find fix: where it went away)")
    bisect_command.add_arguments(p)
    p.set_defaults(func=bisect_command.cmd_bisect)
    p = sub.add_parser("bisect-step", help="one verdict for `git bisect run`: exit 0 good / 1 bad / 125 skip")
    bisect_command.add_step_arguments(p)
    p.set_defaults(func=bisect_command.cmd_bisect_step)
    p = sub.add_parser("bundle", help="build or install an offline vLLM wheel bundle for an air-gapped GPU node")
    bundle_cli.configure_parser(p)
    p.set_defaults(func=bundle_cli.run_command)
    return parser


def _normalise(argv: list[str]) -> list[str]:
    """`run.py SCENARIO.yaml ...` means `run.py run SCENARIO.yaml ...`."""
    for i, arg in enumerate(argv):
        if arg.startswith("-"):
            continue
        if arg not in SUBCOMMANDS:
            return argv[:i] + ["run"] + argv[i:]
        break
    return argv


def _subcommand(argv: list[str]) -> str | None:
    return next((arg for arg in argv if not arg.startswith("-")), None)


def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt  # a CI agent's SIGTERM ends the run like Ctrl-C: children stopped, results kept


def _interrupts_raise() -> None:
    """Ctrl-C raises KeyboardInterrupt again (run.py ignores it quietly while importing), and SIGTERM
    does too; only the main thread may set handlers."""
    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _sigterm_as_interrupt)


def main(argv: list[str] | None = None) -> int:
    try:
        _interrupts_raise()
        argv = _normalise(list(sys.argv[1:] if argv is None else argv))
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:  # argparse exits 2 on usage errors, 0 for --help
            code = int(e.code or 0)
            if code and _subcommand(argv) == "bisect-step":  # `git bisect run` would read 2 as "bad"
                from harness.bisect.command import EXIT_ABORT

                print(f"error: a usage error stops the bisection (aborting: exit {EXIT_ABORT})", file=sys.stderr)
                return EXIT_ABORT
            return code
        return _dispatch(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _one_line(error: BaseException | str) -> str:
    """An error for the terminal: one line, and a name from the input cannot drive the terminal."""
    from harness.xmlsafe import one_line, printable

    return printable(one_line(str(error)))


def _dispatch(args: argparse.Namespace) -> int:
    try:
        return args.func(args)
    except HarnessError as e:
        if args.debug:
            traceback.print_exc()
        for line in e.lines():
            print(f"error: {_one_line(line)}", file=sys.stderr)
        return e.exit_code
    except Exception as e:  # a bug: one line unless --debug
        if args.debug:
            raise
        print(f"internal error: {type(e).__name__}: {_one_line(e)} (run with --debug for the traceback)",
              file=sys.stderr)
        return EXIT_INFRASTRUCTURE
