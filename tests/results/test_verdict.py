"""The verdict (all four, their precedence, repeats with Fisher's test, interrupted runs) and the
report built from a run directory (summary.json, report.md)."""

from __future__ import annotations

import json

import pytest

from tests.fixtures import ASSERT, CRASH, OK, VRAM, run_summary, write_run, write_variant
from harness.results import stats
from harness.errors import InputError
from harness.results.junitread import Case
from harness.model import FailureClass, Outcome, Verdict
from harness import pipeline
from harness.report import markdown
from harness.results.verdict import evaluate, step_of

SKIP = "skip"


def cases(steps: dict[str, FailureClass | str], repeat: int | None = None) -> list[Case]:
    """Cases of one variant; a step maps to its failure class (NONE: passed, "skip": skipped)."""
    out = []
    for step, cls in steps.items():
        name = step if repeat is None else f"{step}[{repeat}]"
        if cls == SKIP:
            out.append(Case("v", "demo", name, Outcome.SKIPPED))
        elif cls is OK:
            out.append(Case("v", "demo", name, Outcome.PASSED))
        else:
            out.append(Case("v", "demo", name, Outcome.FAILED, cls, message=f"{cls} in {step}"))
    return out


def repeated(per_repeat: list[dict[str, FailureClass | str]]) -> list[Case]:
    return [c for r, steps in enumerate(per_repeat) for c in cases(steps, r)]


LEAKY = {"a": OK, "b": VRAM, "c": VRAM}
CLEAN = {"a": OK, "b": OK, "c": OK}


# ----------------------------------------------------------------------------- the four verdicts

def test_fix_confirmed():
    report = evaluate({"no_fix": cases(LEAKY), "with_fix": cases(CLEAN)}, "no_fix", 1)
    assert report.verdict is Verdict.FIX_CONFIRMED
    assert report.exit_code == 0
    (reason,) = report.reasons
    assert reason.startswith("with_fix: fix confirmed: ")
    assert "2 vram_construction failure(s) (b, c)" in reason
    cand = report.candidates["with_fix"]
    assert cand.fisher_p is None and cand.regressions == [] and cand.vram_failures == 0
    assert {c.key[1]: c.transition.value for c in cand.diff.cases} == {"a": "unchanged", "b": "fixed", "c": "fixed"}


def test_not_reproduced_says_the_comparison_proves_nothing():
    report = evaluate({"no_fix": cases(CLEAN), "with_fix": cases(CLEAN)}, "no_fix", 1)
    assert report.verdict is Verdict.NOT_REPRODUCED
    assert report.exit_code == 0
    (reason,) = report.reasons
    assert "had no vram_construction failure" in reason and "proves nothing" in reason


def test_fix_insufficient():
    report = evaluate({"no_fix": cases(LEAKY), "with_fix": cases({"a": OK, "b": OK, "c": VRAM})}, "no_fix", 1)
    assert report.verdict is Verdict.FIX_INSUFFICIENT
    assert report.exit_code == 1
    assert report.reasons == ["with_fix: fix insufficient: 1 vram_construction failure(s) remain: c"]
    assert report.candidates["with_fix"].vram_failures == 1


def test_a_leaky_step_that_times_out_or_never_runs_with_the_fix_is_not_fixed():
    with_fix = {"a": OK, "b": FailureClass.TIMEOUT, "c": SKIP}  # c skipped after b's timeout
    report = evaluate({"no_fix": cases(LEAKY), "with_fix": cases(with_fix)}, "no_fix", 1)
    assert report.verdict is Verdict.FIX_INSUFFICIENT
    assert report.exit_code == 1
    assert report.reasons == ["with_fix: fix insufficient: 2 step(s) that failed for VRAM in 'no_fix' do not "
                              "pass here: b (timeout), c (skipped)"]


def test_regression_of_any_class():
    report = evaluate({"no_fix": cases(LEAKY), "with_fix": cases({"a": CRASH, "b": OK, "c": OK})}, "no_fix", 1)
    assert report.verdict is Verdict.REGRESSION
    assert report.exit_code == 1
    assert report.candidates["with_fix"].regressions == ["a"]
    assert "pass in 'no_fix' but fail here: a (crash)" in report.reasons[0]


# ----------------------------------------------------------------------------- precedence

def test_regression_beats_fix_insufficient():
    report = evaluate({"no_fix": cases(LEAKY), "with_fix": cases({"a": VRAM, "b": OK, "c": VRAM})}, "no_fix", 1)
    assert report.verdict is Verdict.REGRESSION
    # every condition that holds is named, the deciding one first
    assert [r.split(": ")[1] for r in report.reasons] == ["regression", "fix insufficient"]


def test_fix_insufficient_beats_not_reproduced():
    # the baseline failed, but not for lack of memory; the candidate does run out of memory
    report = evaluate({"no_fix": cases({"a": CRASH}), "with_fix": cases({"a": VRAM})}, "no_fix", 1)
    assert report.verdict is Verdict.FIX_INSUFFICIENT
    assert [r.split(": ")[1] for r in report.reasons] == ["fix insufficient", "baseline broken"]


def test_regression_beats_not_reproduced():
    report = evaluate({"no_fix": cases(CLEAN), "with_fix": cases({"a": OK, "b": ASSERT, "c": OK})}, "no_fix", 1)
    assert report.verdict is Verdict.REGRESSION


def test_overall_verdict_is_the_worst_candidate():
    report = evaluate({"no_fix": cases(LEAKY), "fixed": cases(CLEAN), "settle": cases(CLEAN),
                       "half": cases({"a": OK, "b": OK, "c": VRAM})}, "no_fix", 1)
    assert {n: c.verdict for n, c in report.candidates.items()} == {
        "fixed": Verdict.FIX_CONFIRMED, "settle": Verdict.FIX_CONFIRMED, "half": Verdict.FIX_INSUFFICIENT}
    assert report.verdict is Verdict.FIX_INSUFFICIENT
    assert len(report.reasons) == 3


def test_still_failing_for_other_reasons_is_not_a_regression():
    report = evaluate({"no_fix": cases({"a": ASSERT, "b": VRAM}), "with_fix": cases({"a": ASSERT, "b": OK})},
                      "no_fix", 1)
    assert report.verdict is Verdict.FIX_CONFIRMED


def test_skipped_steps_are_not_compared():
    report = evaluate({"no_fix": cases({"a": SKIP, "b": VRAM}), "with_fix": cases({"a": CRASH, "b": OK})},
                      "no_fix", 1)
    assert report.verdict is Verdict.FIX_CONFIRMED
    assert report.candidates["with_fix"].diff.cases[0].transition.value == "skipped"


def test_counts_per_variant_by_class():
    report = evaluate({"no_fix": cases({"a": OK, "b": VRAM, "c": VRAM, "d": ASSERT, "e": SKIP}),
                       "with_fix": cases(CLEAN)}, "no_fix", 1)
    counts = report.counts["no_fix"]
    assert (counts["cases"], counts["passed"], counts["failed"], counts["skipped"]) == (5, 1, 3, 1)
    assert counts["classes"]["vram_construction"] == 2 and counts["classes"]["assertion"] == 1
    assert "none" not in counts["classes"] and counts["classes"]["crash"] == 0


# ----------------------------------------------------------------------------- repeats

def test_step_names_lose_their_repeat_suffix_only_when_repeated():
    assert step_of("logprobs[3]", 10) == "logprobs"
    assert step_of("test_min_p[0.1][2]", 3) == "test_min_p[0.1]"
    assert step_of("test_seed[0]", 1) == "test_seed[0]"  # a pytest parameter, not a repeat


def test_repeats_significant_difference_confirms_the_fix():
    base = repeated([{"a": OK, "b": VRAM if r < 8 else OK} for r in range(10)])
    cand = repeated([{"a": OK, "b": OK} for _ in range(10)])
    report = evaluate({"no_fix": base, "with_fix": cand}, "no_fix", 10)
    p = stats.fisher_exact([[8, 12], [0, 20]])
    assert p < 0.05
    assert report.verdict is Verdict.FIX_CONFIRMED
    assert report.candidates["with_fix"].fisher_p == pytest.approx(p)
    assert f"p={p:.3g}" in report.reasons[0] and "8/20 vs 0/20" in report.reasons[0]
    # per step: VRAM failure rates with Wilson intervals
    (row_b,) = [row for row in report.steps if row.step == "b"]
    cell = row_b.cells["no_fix"]
    assert (cell.runs, cell.failed, cell.vram.k, cell.vram.n) == (10, 8, 8, 10)
    assert (cell.vram.low, cell.vram.high) == stats.wilson(8, 10)
    assert cell.case.outcome is Outcome.FAILED and cell.case.failure_class is VRAM
    assert row_b.cells["with_fix"].vram.k == 0
    assert [row.step for row in report.steps] == ["a", "b"]
    assert report.pooled["no_fix"].k == 8 and report.pooled["no_fix"].n == 20


def test_repeats_difference_not_significant_is_not_reproduced():
    base = repeated([{"a": OK, "b": VRAM if r < 2 else OK} for r in range(10)])
    cand = repeated([{"a": OK, "b": OK} for _ in range(10)])
    report = evaluate({"no_fix": base, "with_fix": cand}, "no_fix", 10)
    p = stats.fisher_exact([[2, 18], [0, 20]])
    assert p >= 0.05
    assert report.verdict is Verdict.NOT_REPRODUCED
    assert report.exit_code == 0
    assert f"difference not significant (VRAM failures 2/20 vs 0/20, Fisher p={p:.3g})" in report.reasons[0]
    assert report.reasons[0].count("p=") == 1  # the p-value once


def test_repeats_a_remaining_vram_failure_is_not_also_called_not_significant():
    base = repeated([{"b": VRAM if r < 3 else OK} for r in range(10)])
    cand = repeated([{"b": VRAM if r == 0 else OK} for r in range(10)])
    report = evaluate({"no_fix": base, "with_fix": cand}, "no_fix", 10)
    assert report.verdict is Verdict.FIX_INSUFFICIENT
    assert report.candidates["with_fix"].fisher_p >= 0.05
    assert not any("not significant" in r for r in report.reasons), report.reasons


def test_an_early_stopped_run_tests_at_its_last_looks_level():
    base = repeated([{"b": VRAM if r < 6 else OK} for r in range(10)])
    cand = repeated([{"b": OK} for _ in range(10)])
    assert stats.fisher_exact([[6, 4], [0, 10]]) < 0.05
    assert evaluate({"no_fix": base, "with_fix": cand}, "no_fix", 10).verdict is Verdict.FIX_CONFIRMED
    strict = evaluate({"no_fix": base, "with_fix": cand}, "no_fix", 10, alpha=0.001)
    assert strict.verdict is Verdict.NOT_REPRODUCED and "level 0.001" in strict.reasons[0]


def test_repeats_any_remaining_vram_failure_is_insufficient_even_if_significant():
    base = repeated([{"b": VRAM} for _ in range(10)])
    cand = repeated([{"b": VRAM if r == 0 else OK} for r in range(10)])
    report = evaluate({"no_fix": base, "with_fix": cand}, "no_fix", 10)
    assert report.candidates["with_fix"].fisher_p < 0.05
    assert report.verdict is Verdict.FIX_INSUFFICIENT


def test_repeats_regression_is_per_step():
    base = repeated([{"a": OK, "b": VRAM} for _ in range(10)])
    cand = repeated([{"a": ASSERT if r == 4 else OK, "b": OK} for r in range(10)])
    report = evaluate({"no_fix": base, "with_fix": cand}, "no_fix", 10)
    assert report.verdict is Verdict.REGRESSION
    assert report.candidates["with_fix"].regressions == ["a"]


def test_repeats_flaky_in_both_is_not_a_regression():
    base = repeated([{"a": ASSERT if r == 1 else OK, "b": VRAM} for r in range(10)])
    cand = repeated([{"a": ASSERT if r == 7 else OK, "b": OK} for r in range(10)])
    report = evaluate({"no_fix": base, "with_fix": cand}, "no_fix", 10)
    assert report.verdict is Verdict.FIX_CONFIRMED


# ----------------------------------------------------------------------------- incomplete runs

def test_incomplete_flag_passes_through_with_a_reason():
    report = evaluate({"no_fix": cases(LEAKY), "with_fix": cases(CLEAN)}, "no_fix", 1, incomplete=True)
    assert report.incomplete is True
    assert report.verdict is Verdict.FIX_CONFIRMED
    assert report.reasons[0].startswith("run incomplete")


def test_interrupted_candidate_that_never_reached_the_failing_steps_proves_nothing():
    report = evaluate({"no_fix": cases(LEAKY), "with_fix": cases({"a": OK})}, "no_fix", 1, incomplete=True)
    assert report.verdict is Verdict.NOT_PROVEN and report.exit_code == 1
    assert "none of the steps that failed for VRAM in 'no_fix' ran here (b, c)" in report.reasons[1]


def test_candidate_with_no_cases_proves_nothing():
    report = evaluate({"no_fix": cases(LEAKY), "with_fix": []}, "no_fix", 1, incomplete=True)
    assert report.verdict is Verdict.NOT_PROVEN and report.exit_code == 1


def test_missing_baseline_or_no_candidate():
    report = evaluate({"with_fix": cases(CLEAN)}, "no_fix", 1, incomplete=True)
    assert report.verdict is Verdict.NOT_REPRODUCED
    assert "baseline 'no_fix' has no results" in report.reasons
    alone = evaluate({"no_fix": cases(LEAKY)}, "no_fix", 1)
    assert alone.verdict is Verdict.NOT_REPRODUCED and alone.candidates == {}
    assert "nothing to compare" in alone.reasons[0]


# ----------------------------------------------------------------------------- run directory → report

SUMMARY_KEYS = {"version", "scenario", "scenario_path", "run_id", "started", "finished", "backend", "platform",
                "baseline", "variants", "repeat", "incomplete", "verdict", "exit_code", "reasons", "candidates",
                "missing", "counts", "cases", "stats", "transitions", "substitutions", "orphans", "allow", "rehearsal",
                "leaks", "teardown_cost", "probe_notes"}


def test_summary_and_report_written_atomically(tmp_path):
    run_dir = write_run(tmp_path / "run", substitutions=["model: meta-llama/Llama-3.2-1B -> tiny-llama"],
                        orphans=[{"pid": 4242, "cmdline": "python -m vllm.engine", "used_bytes": 2**30}])
    write_variant(run_dir, "no_fix", {"a": OK, "b": VRAM, "c": VRAM})
    write_variant(run_dir, "with_fix", {"a": OK, "b": OK, "c": OK})
    data = pipeline.report(run_dir, record_history=False)
    assert set(data) == SUMMARY_KEYS
    assert json.loads((run_dir / "summary.json").read_text()) == data
    assert sorted(p.name for p in run_dir.iterdir()) == ["no_fix.xml", "report.html", "report.md", "run.json",
                                                         "summary.json", "with_fix.xml"]  # no temporary files left
    assert data["verdict"] == "fix confirmed" and data["exit_code"] == 0
    assert data["version"] == 1 and data["missing"] == []
    assert data["counts"]["no_fix"]["classes"]["vram_construction"] == 2
    assert [row["step"] for row in data["cases"]] == ["a", "b", "c"]
    assert data["cases"][1]["variants"]["no_fix"]["failure_class"] == "vram_construction"
    assert data["transitions"]["with_fix"]["counts"]["fixed"] == 2
    assert data["stats"]["fisher"] == {}  # no repeats, no test
    md = (run_dir / "report.md").read_text()
    assert md.startswith("## sampler_mi250: PASS (fix confirmed, exit 0)")
    assert "| step | no_fix | with_fix |" in md
    assert "| b | failed: vram_construction | passed |" in md
    # a fixed step shows what the baseline failed with
    assert "| fixed | b | failed: vram_construction | passed | ValueError: vram_construction \\| with a pipe |" in md
    assert "### Substitutions" in md and "tiny-llama" in md
    assert "### Orphaned processes" in md and "pid=4242" in md
    assert "INCOMPLETE" not in md


def test_report_with_repeats_shows_rates_and_fisher(tmp_path):
    run_dir = write_run(tmp_path / "run", repeat=10)
    write_variant(run_dir, "no_fix", {"a": OK, "b": [VRAM] * 8 + [OK] * 2}, repeats=10)
    write_variant(run_dir, "with_fix", {"a": OK, "b": OK}, repeats=10)
    data = pipeline.summary_of(run_dir)
    assert data["verdict"] == "fix confirmed"
    assert data["stats"]["fisher"]["with_fix"]["table"] == [[8, 12], [0, 20]]
    assert data["stats"]["pooled_vram"]["no_fix"]["k"] == 8
    cell = data["cases"][1]["variants"]["no_fix"]
    assert (cell["runs"], cell["failed"], cell["vram"]["k"]) == (10, 8, 8)
    md = markdown.render(data)
    assert "8/10 failed (vram_construction); VRAM 80% [49%, 94%]" in md
    assert "Fisher" in md


def test_incomplete_run_reports_missing_variants(tmp_path):
    run_dir = write_run(tmp_path / "run", incomplete=True)
    write_variant(run_dir, "no_fix", {"a": OK, "b": VRAM})
    data = pipeline.summary_of(run_dir)
    assert data["incomplete"] is True and data["missing"] == ["with_fix"]
    assert data["verdict"] == "not reproduced"
    assert any("with_fix" in r and "no results" in r for r in data["reasons"])
    assert "> **INCOMPLETE**" in markdown.render(data)


def test_missing_variant_of_a_finished_run_is_an_error(tmp_path):
    run_dir = write_run(tmp_path / "run")
    write_variant(run_dir, "no_fix", {"a": OK})
    with pytest.raises(InputError, match=r"with_fix\.xml: missing JUnit file for variant 'with_fix'"):
        pipeline.summary_of(run_dir)


def test_not_a_run_directory(tmp_path):
    with pytest.raises(InputError, match="is not a run directory: no run.json"):
        pipeline.summary_of(tmp_path)
    write_run(tmp_path)
    with pytest.raises(InputError, match="missing JUnit file for variant 'no_fix'"):
        pipeline.summary_of(tmp_path)
    write_run(tmp_path, incomplete=True)  # interrupted before any worker wrote one: still reported
    assert pipeline.summary_of(tmp_path).incomplete is True


@pytest.mark.parametrize("text, words", [
    ("{not json", "not JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"version": 7}', "version: unsupported"),
    ('{"version": 1, "variants": "a", "baseline": "a"}', "variants: expected a list"),
    ('{"version": 1, "variants": ["../x"], "baseline": "a"}', "not a usable variant name"),
    ('{"version": 1, "variants": ["a"], "baseline": "a", "repeat": 0}', "repeat: expected"),
])
def test_bad_run_json(tmp_path, text, words):
    (tmp_path / "run.json").write_text(text)
    with pytest.raises(InputError, match=words):
        pipeline.summary_of(tmp_path)


def test_markdown_escapes_cells_and_truncates_long_tables(tmp_path):
    run_dir = write_run(tmp_path / "run")
    steps = {f"step_{i:04d}": (VRAM if i % 2 else OK) for i in range(1200)}
    write_variant(run_dir, "no_fix", steps)
    write_variant(run_dir, "with_fix", {s: (ASSERT if s == "step_0000" else OK) for s in steps})
    data = pipeline.summary_of(run_dir)
    assert data["verdict"] == "regression" and data["exit_code"] == 1
    md = markdown.render(data)
    assert md.startswith("## sampler_mi250: FAIL (regression, exit 1)")
    assert "more steps not shown; see summary.json" in md
    assert "more transitions not shown" in md
    assert "with a pipe" in md and "\\| with a pipe" in md
    assert len(md.encode()) < markdown.MAX_BYTES


def test_markdown_stays_under_the_annotation_limit():
    reasons = ["x" * 1500] * 2000  # 3 MB of reasons
    md = markdown.render(run_summary({"verdict": "regression", "reasons": reasons, "variants": [], "cases": []}))
    assert len(md.encode()) <= markdown.MAX_BYTES
    assert md.rstrip().endswith("see summary.json._")


# --------------------------------------------------------------------------- exit codes that gate
def test_every_step_failing_otherwise_is_baseline_broken_and_exits_1():
    broken = {"a": FailureClass.CONSTRUCTION_ERROR, "b": FailureClass.CONSTRUCTION_ERROR}
    report = evaluate({"no_fix": cases(broken), "with_fix": cases(broken)}, "no_fix", 1)
    assert report.verdict is Verdict.BASELINE_BROKEN and report.exit_code == 1
    assert "failed for reasons other than the leak: a (construction_error), b (construction_error)" in report.reasons[0]


def test_a_single_variant_that_only_fails_otherwise_is_baseline_broken():
    report = evaluate({"only": cases({"a": ASSERT})}, "only", 1)
    assert report.verdict is Verdict.BASELINE_BROKEN and report.exit_code == 1


def test_a_candidate_failure_not_allowed_fails_the_run_though_the_fix_is_confirmed():
    base = cases({"a": VRAM, "b": ASSERT})
    cand = cases({"a": OK, "b": ASSERT})  # b fails in both: "still failing", no regression
    report = evaluate({"no_fix": base, "with_fix": cand}, "no_fix", 1)
    assert report.verdict is Verdict.FIX_CONFIRMED and report.exit_code == 1
    assert report.candidates["with_fix"].not_allowed == ["b (assertion)"]
    allowed = evaluate({"no_fix": base, "with_fix": cand}, "no_fix", 1, allow=frozenset({FailureClass.ASSERTION}))
    assert allowed.verdict is Verdict.FIX_CONFIRMED and allowed.exit_code == 0


def test_allowing_a_class_makes_a_baseline_that_fails_only_so_not_reproduced():
    report = evaluate({"no_fix": cases({"a": ASSERT}), "with_fix": cases({"a": ASSERT})}, "no_fix", 1,
                      allow=frozenset({FailureClass.ASSERTION}))
    assert report.verdict is Verdict.NOT_REPRODUCED and report.exit_code == 0


@pytest.mark.parametrize("text, message", [("assertoin", "did you mean 'assertion'"),
                                           ("vram_construction", "what the verdict is about")])
def test_allow_refuses_unknown_classes_and_the_leak_itself(text, message):
    from harness.results import gate

    with pytest.raises(InputError, match=message):
        gate.parse_allow([text])
    assert gate.parse_allow(["assertion, timeout", "crash"]) == {FailureClass.ASSERTION, FailureClass.TIMEOUT,
                                                                  FailureClass.CRASH}
