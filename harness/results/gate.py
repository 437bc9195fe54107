"""What may fail in a run that still passes: ``--allow CLASS,...``.

A nightly must turn red for a broken scenario or a typo, not only for the leak: a run exits 0 only
when its verdict holds and no candidate step failed for a class the user did not allow. A baseline
that fails for other reasons than the leak is `baseline broken`, not `not reproduced`.
``vram_construction`` cannot be allowed: it is what the verdict is about.
"""

from __future__ import annotations

import difflib
from typing import Iterable

from harness.errors import InputError
from harness.model import FailureClass, Outcome

ALLOWABLE = tuple(c.value for c in FailureClass if c not in (FailureClass.NONE, FailureClass.VRAM_CONSTRUCTION))


def parse_allow(values: Iterable[str] | None, where: str = "--allow") -> frozenset[FailureClass]:
    """``["assertion,timeout", "crash"]`` -> those classes; InputError (exit 2) for any other word."""
    out = set()
    for value in values or ():
        for word in filter(None, (w.strip() for w in str(value).split(","))):
            if word not in ALLOWABLE:
                close = difflib.get_close_matches(word, ALLOWABLE, n=1, cutoff=0.5)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                why = " (it is what the verdict is about)" if word == FailureClass.VRAM_CONSTRUCTION.value else ""
                raise InputError(f"{where}: {word!r} cannot be allowed{why}{hint} (valid: {', '.join(ALLOWABLE)})")
            out.add(FailureClass(word))
    return frozenset(out)


def not_allowed(groups: dict, allow: frozenset[FailureClass]) -> list[tuple[tuple[str, str], str]]:
    """(step key, failure class) of each step with a failure that is neither the leak nor allowed;
    ``groups`` maps a step key to its cases (one per repeat)."""
    out = []
    for key, cases in groups.items():
        classes = sorted({c.failure_class.value for c in cases if c.outcome is Outcome.FAILED
                          and c.failure_class is not FailureClass.VRAM_CONSTRUCTION and c.failure_class not in allow})
        if classes:
            out.append((key, ", ".join(classes)))
    return out
