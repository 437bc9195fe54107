"""Early stopping of `repeat: N`: the looks' levels, the decisions, and a real run that stops."""

from __future__ import annotations

import json

import pytest

from harness import cli
from harness.results import stats
from harness.results.junitread import read_cases
from harness.run.earlystop import EarlyStop
from tests.sim_scenarios import bare_vs_fixed


@pytest.mark.parametrize("looks", [1, 3, 10, 25])
def test_the_looks_spend_exactly_alpha_and_early_looks_little(looks):
    levels = [stats.look_level(k, looks, 0.05) for k in range(1, looks + 1)]
    assert sum(levels) == pytest.approx(0.05)
    assert all(x >= 0 for x in levels)
    if looks > 1:
        assert levels[0] < levels[-1]


def test_a_candidate_vram_failure_decides_at_once():
    d = stats.look((0, 3), (1, 3), look_no=1, looks=10, per_round=3, alpha=0.05)
    assert d.decided and d.reason == "fails"


def test_significance_needs_this_looks_level_not_alpha():
    # 6/9 vs 0/9 has p = 0.009 < 0.05, but the third of ten looks may spend only 0.00033
    early = stats.look((6, 9), (0, 9), look_no=3, looks=10, per_round=3, alpha=0.05)
    assert early.p < 0.05 and not early.decided
    late = stats.look((8, 12), (0, 12), look_no=4, looks=10, per_round=3, alpha=0.05)
    assert late.decided and late.reason == "significant"


def test_futile_when_even_the_best_remaining_rounds_cannot_reach_significance():
    assert stats.look((0, 24), (0, 24), look_no=8, looks=10, per_round=3, alpha=0.05).reason == "futile"
    assert not stats.look((0, 6), (0, 6), look_no=2, looks=10, per_round=3, alpha=0.05).decided


def test_run_stops_only_when_every_candidate_is_decided():
    es = EarlyStop("b", ["c1", "c2"], rounds=10, per_round=3)
    assert not es.after_round(1, {"b": (2, 3), "c1": (1, 3), "c2": (0, 3)})  # c2 undecided
    assert es.after_round(2, {"b": (4, 6), "c1": (1, 6), "c2": (1, 6)})
    assert es.record()["stopped_after"] == 2 and es.record()["rounds_run"] == 2


def _run(tmp_path, *extra):
    path = tmp_path / "s.yaml"
    path.write_text(bare_vs_fixed("es", release_delay_s=0.1))
    code = cli.main([str(path), "--out", str(tmp_path / "out"), "--repeat", "8", *extra])
    (rd,) = (tmp_path / "out" / "es").iterdir()
    return code, rd


def test_a_real_run_stops_once_the_fix_is_significant(tmp_path):
    code, rd = _run(tmp_path)
    seq = json.loads((rd / "run.json").read_text())["sequential"]
    summary = json.loads((rd / "summary.json").read_text())
    # `bare` fails 2 of 3 steps every round: 8/12 vs 0/12 after round 4 is p=0.0013 < level 0.0016
    assert seq["stopped_after"] == 4 and len(read_cases(rd / "with_fix.xml")) == 4 * 3
    assert summary["verdict"] == "fix confirmed" and code == 0
    assert summary["stats"]["alpha"] == pytest.approx(seq["level"])


def test_no_early_stop_runs_every_repeat(tmp_path):
    code, rd = _run(tmp_path, "--no-early-stop")
    assert "sequential" not in json.loads((rd / "run.json").read_text())
    assert len(read_cases(rd / "with_fix.xml")) == 8 * 3 and code == 0


def test_report_md_says_the_run_stopped_early(tmp_path):
    _, rd = _run(tmp_path)
    assert "early stop after 4 of 8 rounds" in (rd / "report.md").read_text()
