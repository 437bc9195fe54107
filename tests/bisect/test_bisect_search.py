"""The pure parts: the bisection (run counts, skipped revisions, contradicted ends, resuming) and
the predicate that turns one run's JUnit cases into good or bad."""

from __future__ import annotations

import math

import pytest

from harness.bisect.bisector import FIX, REGRESSION
from harness.bisect.predicate import FailOn, StepVerdict, judge, precheck
from harness.bisect.search import Behaviour, Bisection, Status, max_runs
from harness.errors import InputError, ScenarioError
from harness.results.junitread import Case
from harness.model import FailureClass, Outcome
from tests.fixtures import DATA, GIB

OLD, NEW, SKIP = Behaviour.OLD, Behaviour.NEW, Behaviour.SKIP


def drive(n: int, first_new: int, skipped=(), search: Bisection | None = None):
    """Run a search against a monotonic truth; returns (result, indexes tested in order)."""
    search = search or Bisection(n)
    tested = []
    while (i := search.next()) is not None:
        assert i not in tested, "a revision is never tested twice"
        tested.append(i)
        search.record(i, SKIP if i in skipped else (NEW if i >= first_new else OLD))
    return search.result(), tested


@pytest.mark.parametrize("n", range(2, 70))
def test_finds_every_position_within_log2_n_plus_one_runs(n):
    bound = math.ceil(math.log2(n)) + 1
    for first_new in range(1, n):
        result, tested = drive(n, first_new)
        assert result.status is Status.FOUND
        assert (result.last_old, result.first_new) == (first_new - 1, first_new)
        assert result.candidates == (first_new,)
        assert len(tested) <= bound, (n, first_new, tested)
        assert len(tested) <= max_runs(n)


@pytest.mark.parametrize("n", [2, 3, 4, 5, 8, 9, 17, 33, 64, 65, 1000])
def test_max_runs_is_reached_and_matches_the_formula(n):
    worst = max(len(drive(n, k)[1]) for k in range(1, n))
    assert worst == max_runs(n) == (math.ceil(math.log2(n - 1)) + 1 if n > 2 else 2)


def test_the_answer_never_rests_on_an_end_nobody_ran():
    result, tested = drive(9, 1)  # everything but the old end is new: the old end must be run
    assert 0 in tested and result.first_new == 1
    result, tested = drive(9, 8)  # only the new end is new: the new end must be run
    assert 8 in tested and result.first_new == 8


def test_first_test_is_the_midpoint():
    assert Bisection(9).next() == 4
    assert Bisection(2).next() == 1  # nothing between the ends: verify them, new end first


def test_skipped_midpoint_gives_way_to_its_neighbours():
    search = Bisection(11)
    assert search.next() == 5
    search.record(5, SKIP)
    assert search.next() == 4  # nearest neighbour, lower first on a tie
    search.record(4, SKIP)
    assert search.next() == 6
    search.record(6, NEW)
    assert search.next() == 3  # the midpoint of 0..6, its skipped neighbour 4 passed over


@pytest.mark.parametrize("first_new", range(1, 12))
def test_skips_cost_little_and_never_stop_the_search(first_new):
    skipped = {3, 5, 6}
    result, tested = drive(12, first_new, skipped)
    if first_new in skipped or first_new - 1 in skipped:
        # a skipped revision next to the change hides which one it was: a range, the skips in it
        assert result.status is Status.AMBIGUOUS
        assert first_new in result.candidates
        assert set(result.candidates) - {result.candidates[-1]} <= skipped
        assert result.last_old == min(result.candidates) - 1
    else:
        assert result.status is Status.FOUND and result.first_new == first_new
    assert len(tested) <= max_runs(12) + len(skipped)


def test_all_interior_revisions_skipped_gives_the_whole_range():
    result, tested = drive(5, 2, skipped={1, 2, 3})
    assert result.status is Status.AMBIGUOUS
    assert result.candidates == (1, 2, 3, 4) and result.last_old == 0
    assert sorted(tested) == [0, 1, 2, 3, 4]


def test_an_unbuildable_end_is_taken_on_trust_and_reported():
    result, _ = drive(6, 5, skipped={5})
    assert result.status is Status.FOUND and result.first_new == 5 and result.unverified == (5,)


def test_old_end_that_is_new_is_reported():
    result, tested = drive(8, 0)
    assert result.status is Status.OLD_END_IS_NEW and result.first_new is None
    assert tested[-1] == 0


def test_new_end_that_is_old_is_reported():
    result, tested = drive(8, 99)  # nothing ever fails
    assert result.status is Status.NEW_END_IS_OLD and tested[-1] == 7


def test_resuming_from_recorded_verdicts_runs_only_the_rest():
    full_result, full = drive(40, 23)
    half = Bisection(40)
    for i in full[:3]:  # what a first, interrupted invocation had cached
        half.record(i, NEW if i >= 23 else OLD)
    result, rest = drive(40, 23, search=half)
    assert result == full_result and rest == full[3:]


def test_verdicts_outside_the_range_are_refused():
    with pytest.raises(IndexError):
        Bisection(3).record(3, OLD)
    with pytest.raises(ValueError):
        Bisection(1)


# --------------------------------------------------------------------------- the predicate

def case(name, failure=FailureClass.NONE, **props):
    """A JUnit case as junitread reads it; its engine was built unless construction failed."""
    outcome = Outcome.PASSED if failure is FailureClass.NONE else Outcome.FAILED
    if failure not in (FailureClass.VRAM_CONSTRUCTION, FailureClass.CONSTRUCTION_ERROR):
        props.setdefault("mem_after_construct_bytes", 7 * GIB)
    return Case("v", "scenario", name, outcome, failure, "ValueError: boom",
                properties={k: str(v) for k, v in props.items()})


def test_fail_on_parses_its_three_forms():
    assert FailOn.parse("vram") == FailOn("vram") and FailOn.parse("any") == FailOn("any")
    held = FailOn.parse("held-after:engine_core_shutdown>5")
    assert (held.kind, held.action, held.limit_gib) == ("held", "engine_core_shutdown", 5.0)
    assert str(FailOn.parse("held-after: call > 0.5")) == "held-after:call>0.5"
    for bad in ("vrm", "held-after:x", "held-after:x>", "held-after:>3"):
        with pytest.raises(InputError, match="--fail-on"):
            FailOn.parse(bad)


def test_only_a_vram_construction_failure_is_bad_by_default():
    assert judge([case("a"), case("b", FailureClass.ASSERTION)], FailOn("vram"))[0] is StepVerdict.GOOD
    verdict, reason = judge([case("a"), case("b", FailureClass.VRAM_CONSTRUCTION)], FailOn("vram"))
    assert verdict is StepVerdict.BAD and "'b'" in reason and "vram_construction" in reason


def test_any_failure_is_bad_with_fail_on_any():
    assert judge([case("a", FailureClass.CRASH)], FailOn("any"))[0] is StepVerdict.BAD
    assert judge([case("a")], FailOn("any"))[0] is StepVerdict.GOOD


def test_memory_held_after_an_action_is_bad_above_the_limit():
    fail_on = FailOn.parse("held-after:engine_core_shutdown>5")
    before = int(0.5 * GIB)
    low = case("a", mem_before_construct_bytes=before, mem_after_engine_core_shutdown_bytes=before + 4 * GIB)
    high = case("b", mem_before_construct_bytes=before, mem_after_engine_core_shutdown_bytes=before + 6 * GIB)
    never = case("c", FailureClass.VRAM_CONSTRUCTION, mem_before_construct_bytes=before)  # never got there
    assert judge([low, never], fail_on)[0] is StepVerdict.GOOD
    verdict, reason = judge([low, high], fail_on)
    assert verdict is StepVerdict.BAD and "6.00 GiB after engine_core_shutdown" in reason


def test_a_run_that_never_built_an_engine_tells_nothing():
    never = [case("a", FailureClass.CONSTRUCTION_ERROR), case("b", FailureClass.CONSTRUCTION_ERROR)]
    verdict, reason = judge(never, FailOn("vram"))
    assert verdict is StepVerdict.SKIP and "no engine was built" in reason and "construction_error" in reason
    assert judge(never, FailOn.parse("held-after:call>1"))[0] is StepVerdict.SKIP
    assert judge(never, FailOn("any"))[0] is StepVerdict.BAD


def test_verdict_exit_codes_are_git_bisect_runs():
    assert [v.exit_code for v in StepVerdict] == [0, 1, 125]


def test_find_fix_swaps_the_terms():
    assert REGRESSION.to_search(StepVerdict.BAD) is NEW and REGRESSION.to_search(StepVerdict.GOOD) is OLD
    assert FIX.to_search(StepVerdict.GOOD) is NEW and FIX.to_search(StepVerdict.BAD) is OLD
    assert FIX.to_search(StepVerdict.SKIP) is SKIP


def test_precheck_leaves_only_a_call_target_to_the_revisions(tmp_path):
    """A `call:` target may exist only in the revisions: left to them. A mistake beside it, found
    in the same pass, is the user's: said before the first build, not a skip at every revision."""
    text = (DATA / "bad_scenarios" / "call_target_not_importable.yaml").read_text()
    only = tmp_path / "only.yaml"
    only.write_text(text)
    precheck(only, None, FailOn.parse("vram"))
    typo = tmp_path / "typo.yaml"
    typo.write_text(text.replace("with_fix: {profile: mine}", "with_fix: {profile: mine, envv: {}}"))
    with pytest.raises(ScenarioError, match="variants.with_fix.envv: unknown key"):
        precheck(typo, None, FailOn.parse("vram"))
