"""Which steps run: ``--step NAME`` (repeatable) and ``-k EXPR``, as pytest users know them.

``-k`` takes pytest's keyword expressions, compiled by pytest itself: words joined by ``and``,
``or``, ``not`` and parentheses; a word matches a step whose name contains it, ignoring case. The selected steps run
in the scenario's order, back-to-back in one worker as always, so ``--step culprit --step victim``
replays exactly the pair a report named. A name that is no step, an expression that does not
parse, or a selection of nothing is an input error (exit 2).
"""

from __future__ import annotations

import argparse
import difflib
from typing import Callable, Sequence

from harness.errors import InputError

Matcher = Callable[[str], bool]


def parse(expr: str) -> Matcher:
    """``expr`` as a predicate on a step name, compiled once by pytest's own ``-k`` grammar
    (`_pytest.mark.expression.Expression`) and matched as pytest matches a test's keywords (a word
    matches a name that contains it, ignoring case); InputError naming ``-k`` when it does not parse."""
    from _pytest.mark import KeywordMatcher
    from _pytest.mark.expression import Expression
    from pytest import UsageError

    if not expr.strip():
        raise InputError(f"-k: empty expression {expr!r}")
    try:
        compiled = Expression.compile(expr)
    except SyntaxError as e:
        raise InputError(f"-k: {expr!r}: at column {e.offset}: {e.msg}") from None

    def match(name: str) -> bool:
        try:
            return compiled.evaluate(KeywordMatcher(frozenset({name})))
        except UsageError as e:  # `word(arg=...)`: pytest's marker syntax, which names do not take
            raise InputError(f"-k: {expr!r}: {e}") from None

    return match


def steps(names: Sequence[str], only: Sequence[str] | None = None, keyword: str | None = None,
          where: str = "") -> list[str] | None:
    """The step names to run, in scenario order; None when nothing narrows the selection."""
    if not only and not keyword:
        return None
    prefix = f"{where}: " if where else ""
    for n in only or ():
        if n not in names:
            close = difflib.get_close_matches(n, list(names), n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise InputError(f"{prefix}--step: no step '{n}'{hint} (steps: {', '.join(names)})")
    match: Matcher = parse(keyword) if keyword else (lambda name: True)
    chosen = [n for n in names if (not only or n in only) and match(n)]
    if not chosen:
        raise InputError(f"{prefix}-k {keyword!r}"
                         + (f" with --step {', '.join(only)}" if only else "")
                         + f" selects no step (steps: {', '.join(names)})")
    return chosen


def add_arguments(p: argparse.ArgumentParser) -> None:
    """--step and -k, on `run`, `bisect` and `bisect-step`."""
    p.add_argument("--step", action="append", metavar="NAME",
                   help="run only this step (repeatable; the selected steps still run in scenario order)")
    p.add_argument("-k", metavar="EXPR", help="run only the steps whose names match, as pytest's -k: "
                                              "words with and/or/not and parentheses")


def from_args(scenario_path, args: argparse.Namespace) -> list[str] | None:
    """The selection `args` ask for in the scenario at `scenario_path`. Its step names are read from
    the YAML alone: bisect cannot load a scenario whose `call:` code exists only in the revisions."""
    if not args.step and not args.k:
        return None
    from harness.scenario import yamlsafe

    raw = yamlsafe.load(scenario_path)
    body = raw.get("steps") if isinstance(raw, dict) else None
    names = [s["name"] for s in body or [] if isinstance(s, dict) and isinstance(s.get("name"), str)]
    return steps(names, args.step, args.k, where=str(scenario_path))
