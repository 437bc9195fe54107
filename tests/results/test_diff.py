"""Diffing two sets of cases: every transition, the table for people and the JSON for machines."""

from __future__ import annotations

import json

from harness.results.diff import Transition, diff, diff_files, format_table, to_json
from harness.results.junitread import Case
from harness.model import FailureClass, Outcome
from tests.fixtures import DATA

JUNIT = DATA / "junit"
P, F, S = Outcome.PASSED, Outcome.FAILED, Outcome.SKIPPED


def case(name: str, outcome: Outcome, cls: FailureClass = FailureClass.NONE, classname: str = "demo") -> Case:
    if outcome is F and cls is FailureClass.NONE:
        cls = FailureClass.ASSERTION
    return Case("suite", classname, name, outcome, cls, message=f"{name} message" if outcome is F else "")


BASE = [case("fixed", F, FailureClass.VRAM_CONSTRUCTION), case("still", F, FailureClass.VRAM_CONSTRUCTION),
        case("regressed", P), case("unchanged", P), case("gone", P), case("skip_base", S),
        case("skip_cand", F)]
CAND = [case("unchanged", P), case("fixed", P), case("still", F, FailureClass.VRAM_CONSTRUCTION),
        case("regressed", F, FailureClass.CRASH), case("skip_base", P), case("skip_cand", S),
        case("new", F)]


def test_every_transition():
    result = diff(BASE, CAND)
    got = {c.key[1]: c.transition for c in result.cases}
    assert got == {
        "fixed": Transition.FIXED, "still": Transition.STILL_FAILING, "regressed": Transition.REGRESSION,
        "unchanged": Transition.UNCHANGED, "gone": Transition.GONE, "skip_base": Transition.SKIPPED,
        "skip_cand": Transition.SKIPPED, "new": Transition.NEW,
    }
    # baseline order first, then what only the candidate has
    assert [c.key[1] for c in result.cases][-1] == "new"
    assert result.counts[Transition.SKIPPED] == 2
    assert [c.key[1] for c in result.of(Transition.REGRESSION)] == ["regressed"]


def test_keys_include_classname():
    result = diff([case("t", P, classname="a")], [case("t", F, classname="b")])
    assert sorted(c.transition for c in result.cases) == sorted([Transition.GONE, Transition.NEW])


def test_table_puts_interesting_rows_first_and_counts_last():
    text = format_table(diff(BASE, CAND))
    lines = text.splitlines()
    assert lines[0].split() == ["transition", "case", "baseline", "candidate"]
    assert [line.split()[0] for line in lines[1:4]] == ["regression", "still", "fixed"]
    assert lines[1].startswith("regression") and "demo::regressed" in lines[1]
    assert "failed (crash)" in lines[1]
    assert lines[-1] == "8 cases: 1 regression, 1 still failing, 1 fixed, 1 new, 1 gone, 2 skipped, 1 unchanged"
    # columns are aligned: the case column starts at the same offset on every row
    offsets = {line.index("demo::") for line in lines[1:-1]}
    assert len(offsets) == 1


def test_table_can_leave_out_unchanged():
    text = format_table(diff(BASE, CAND), only_changes=True)
    assert "demo::unchanged" not in text
    assert text.splitlines()[-1].endswith("1 unchanged")


def test_json_is_serialisable_and_complete():
    data = to_json(diff(BASE, CAND, "no_fix.xml", "with_fix.xml"))
    json.dumps(data)
    assert data["baseline"] == "no_fix.xml" and data["candidate"] == "with_fix.xml"
    assert data["counts"]["regression"] == 1 and data["counts"]["unchanged"] == 1
    assert set(data["counts"]) == {t.value for t in Transition}
    (regressed,) = [c for c in data["cases"] if c["name"] == "regressed"]
    assert regressed == {
        "classname": "demo", "name": "regressed", "transition": "regression",
        "baseline": {"outcome": "passed", "failure_class": "none", "message": "", "time": 0.0},
        "candidate": {"outcome": "failed", "failure_class": "crash", "message": "regressed message", "time": 0.0},
    }
    (new,) = [c for c in data["cases"] if c["name"] == "new"]
    assert new["baseline"] is None


def test_diff_files_on_harness_fixtures():
    result = diff_files(JUNIT / "harness_no_fix.xml", JUNIT / "harness_with_fix.xml")
    assert {c.key[1]: c.transition.value for c in result.cases} == {
        "logprobs": "unchanged", "seeded": "fixed", "penalties": "fixed"}
    assert result.baseline.endswith("harness_no_fix.xml")
    assert format_table(result).splitlines()[-1] == "3 cases: 2 fixed, 1 unchanged"


def test_empty_inputs():
    result = diff([], [])
    assert result.cases == []
    assert format_table(result).splitlines()[-1] == "0 cases: none"


def test_diff_exits_1_on_a_regression_unless_no_fail(tmp_path, capsys):
    from harness import cli

    base, cand = tmp_path / "base.xml", tmp_path / "cand.xml"
    base.write_text('<testsuite name="b"><testcase classname="c" name="t1"/><testcase classname="c" name="t2"/></testsuite>')
    cand.write_text('<testsuite name="c"><testcase classname="c" name="t1"><failure message="boom"/></testcase>'
                    '<testcase classname="c" name="t2"/></testsuite>')
    assert cli.main(["diff", str(base), str(cand)]) == 1
    assert cli.main(["diff", str(base), str(cand), "--no-fail"]) == 0
    assert cli.main(["diff", str(cand), str(base)]) == 0  # fixed, not regressed
    assert "regression" in capsys.readouterr().out
