"""The scenario schema's checker: typed checks that name the file and key path, and the notebook
of every mistake found in one pass over a file.

A part of the file that is checked on its own (a section, a variant, a step, a sampling set) runs
inside `Checker.part`: its first mistake is noted and the check goes on with the next part, so
`validate` reports every mistake of a file at once, one line each. An unknown key is noted and
skipped. `Checker.done` raises what was noted (one `ScenarioError`, or `ScenarioErrors`).
"""

from __future__ import annotations

import contextlib
import difflib
from pathlib import Path
from typing import Any, Iterator

from harness.errors import ScenarioError, ScenarioErrors

#: how alike a word must be to a valid one to be offered as "did you mean" (difflib's ratio):
#: 'timout_s' -> 'timeout_s' (0.94), 'varaints' -> 'variants' (0.88); 'retries' is not 'timeout_s' (0.5)
CLOSE = 0.7


class Checker:
    def __init__(self, path: Path):
        self.path = path
        self.errors: list[ScenarioError] = []

    def fail(self, key: str | None, msg: str) -> ScenarioError:
        return ScenarioError(self.path, key or None, msg)

    def note(self, key: str | None, msg: str) -> None:
        self.errors.append(self.fail(key, msg))

    @contextlib.contextmanager
    def part(self) -> Iterator[None]:
        """A part checked on its own: its first mistake is noted, the caller's check goes on."""
        try:
            yield
        except ScenarioError as e:
            if not any(e is seen for seen in self.errors):  # noted already: the part only stops
                self.errors.append(e)

    def failed_since(self, count: int) -> bool:
        return len(self.errors) > count

    def done(self) -> None:
        """Raise every mistake noted, in file order."""
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            raise ScenarioErrors(self.errors)

    def mapping(self, value: Any, key: str, allowed: tuple[str, ...] | None,
                required: tuple[str, ...] = ()) -> dict:
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a mapping, got {kind(value)}")
        meant: dict[str, ScenarioError] = {}  # a required key -> the unknown key that looks like it
        for k in value:
            if not isinstance(k, str):
                raise self.fail(key, f"keys must be strings, got {k!r}")
            if allowed is not None and k not in allowed:
                self.note(join(key, k), "unknown key" + suggest(k, allowed))
                meant.setdefault(close(k, allowed) or "", self.errors[-1])
        for k in required:
            if k not in value:
                raise meant.get(k) or self.fail(join(key, k), "required key is missing")  # a typo is one mistake
        return value

    def typed(self, value: Any, key: str, kinds: type | tuple[type, ...], what: str) -> Any:
        if isinstance(value, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,)):
            raise self.fail(key, f"expected {what}, got a boolean")
        if not isinstance(value, kinds):
            raise self.fail(key, f"expected {what}, got {kind(value)}")
        return value

    def number(self, value: Any, key: str, *, lo: float, hi: float, integer: bool = False,
               lo_open: bool = False) -> float:
        self.typed(value, key, int if integer else (int, float), "an integer" if integer else "a number")
        if value != value or (value <= lo if lo_open else value < lo) or value > hi:
            lo_s = f"> {lo}" if lo_open else f">= {lo}"
            raise self.fail(key, f"{value} is out of range (must be {lo_s} and <= {hi})")
        return value

    def text(self, value: Any, key: str) -> str:
        return self.typed(value, key, str, "a string")

    def choice(self, value: Any, key: str, choices: tuple[str, ...]) -> str:
        self.text(value, key)
        if value not in choices:
            raise self.fail(key, f"{value!r} is not valid" + suggest(value, choices))
        return value


def join(prefix: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    return f"{prefix}.{key}" if prefix else key


def kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number", type(None): "nothing (null)"}.get(type(value), type(value).__name__)


def close(word: str, valid) -> str | None:
    """The valid word ``word`` is a slip for, if any: alike by difflib's ratio (`CLOSE`), one character
    apart ('s3' for 's2'), or one the start of the other ('simulated' for 'sim')."""
    word, valid = str(word), [str(v) for v in valid]
    found = difflib.get_close_matches(word, valid, n=1, cutoff=CLOSE)
    if found:
        return found[0]
    one_edit = [v for v in valid if len(word) > 1 and _one_edit(word, v)]
    if one_edit:  # the way difflib breaks a tie: the larger
        return max(one_edit)
    return next((v for v in valid if min(len(v), len(word)) >= 3 and (word.startswith(v) or v.startswith(word))),
                None)


def _one_edit(a: str, b: str) -> bool:
    edits = [op for op in difflib.SequenceMatcher(None, a, b).get_opcodes() if op[0] != "equal"]
    return len(edits) == 1 and max(edits[0][2] - edits[0][1], edits[0][4] - edits[0][3]) == 1


def suggest(word: str, valid) -> str:
    """"; did you mean 'x'?" when a valid word is `close`, then the valid words."""
    found = close(word, valid)
    hint = f"; did you mean '{found}'?" if found else ""
    return f"{hint} (valid: {', '.join(valid)})"
