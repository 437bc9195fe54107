"""`run.py trend --flaky`: tests ranked by how often their outcome flips between runs of the same
code revision, and by failure rate, from history.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import cli
from harness.results import flaky, history


def rec(i: int, failed: set[str], *, version: str = "0.22.0", checkout: str | None = None,
        variant: str = "with_fix", scenario: str = "samplers") -> dict:
    """Run i (one a night), each test ran once; ``checkout`` None: a record written before checkout_ref."""
    night = f"2026-01-{i + 1:02d}"
    out = {"version": 1, "scenario": scenario, "variant": variant, "baseline": False, "run_id": f"{night}-r",
           "date": f"{night}T03:00:00+00:00", "night": night, "vllm_version": version, "vllm_commit": "",
           "steps": {t: {"runs": 1, "failed": int(t in failed)} for t in ("steady", "flipper", "broken", "rare")}}
    if checkout is not None:
        out["checkout_ref"] = checkout
    return out


def history_records() -> list[dict]:
    """Eight nights. `flipper` alternates on one revision; `broken` fails from a new revision on (a
    regression, not a flake: no flip inside a revision); `rare` ran only on the two newest nights."""
    recs = []
    for i in range(8):
        failed = {"flipper"} if i % 2 else set()
        if i >= 4:
            failed.add("broken")
        r = rec(i, failed, version="0.22.0" if i < 4 else "0.23.0", checkout=None if i < 2 else "abc123")
        if i < 6:
            del r["steps"]["rare"]
        elif i == 7:
            r["steps"]["rare"]["failed"] = 1
        recs.append(r)
    return recs


def test_flip_rate_counts_changes_within_one_revision_only():
    tests = {t.test: t for t in flaky.flaky(history_records(), "samplers", min_runs=3)}
    # revisions: 0.22.0 without checkout_ref (2 runs), 0.22.0 @abc123 (2), 0.23.0 @abc123 (4)
    f = tests["flipper"]
    assert (f.flips, f.pairs, f.flip_runs, f.runs, f.failures, f.revisions) == (5, 5, 8, 8, 4, 3)
    assert f.flip_rate == 1.0 and f.failure_rate == 0.5 and f.enough
    b = tests["broken"]
    assert b.flips == 0 and b.failure_rate == 0.5  # it changed with the code, not within it
    assert tests["steady"].flips == 0 and tests["steady"].failures == 0
    r = tests["rare"]
    assert r.runs == 2 and r.flip_runs == 2 and not r.enough  # too few: marked, not ranked
    ranked = [t.test for t in flaky.flaky(history_records(), "samplers", min_runs=3)]
    assert ranked[0] == "flipper" and ranked[1] == "broken" and ranked[-1] == "rare"


def test_the_window_of_nights_applies():
    tests = {t.test: t for t in flaky.flaky(history_records(), "samplers", nights=3, min_runs=3)}
    assert tests["flipper"].runs == 3 and tests["broken"].failures == 3


@pytest.fixture
def results(tmp_path, monkeypatch) -> Path:
    monkeypatch.delenv(history.ENV, raising=False)
    out = tmp_path / "results"
    out.mkdir()
    (out / history.FILE_NAME).write_text("".join(json.dumps(r) + "\n" for r in history_records()) + "{torn\n")
    return out


def test_trend_flaky_prints_the_ranking_with_the_runs_behind_each_figure(results, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")
    assert cli.main(["trend", "samplers", "--flaky", "--min-runs", "3", "--out", str(results)]) == 0
    captured = capsys.readouterr()
    assert "skipped a corrupt line" in captured.err
    lines = captured.out.splitlines()
    row = next(line for line in lines if "flipper" in line)
    assert "│ 1 " in row and "100% (5/5, 8 runs)" in row and "50% (4/8)" in row
    assert any("too few runs (2)" in line and "rare" in line for line in lines)
    assert "1 test(s) passed in every run" in captured.out


def test_trend_flaky_json(results, capsys):
    assert cli.main(["trend", "samplers", "--flaky", "--json", "--out", str(results)]) == 0
    data = json.loads(capsys.readouterr().out)
    by = {t["test"]: t for t in data["tests"]}
    assert data["min_runs"] == 5
    assert by["flipper"]["flip_rate"] == 1.0 and by["flipper"]["too_few_runs"] is False
    assert by["rare"]["too_few_runs"] is True and by["rare"]["runs"] == 2


def test_trend_json_without_flaky_and_unknown_scenarios_are_input_errors(results, capsys):
    assert cli.main(["trend", "samplers", "--json", "--out", str(results)]) == 2
    assert cli.main(["trend", "nope", "--flaky", "--out", str(results)]) == 2
    assert "no runs of scenario 'nope'" in capsys.readouterr().err


def test_history_records_carry_the_checkout_and_old_records_still_read(tmp_path):
    path = tmp_path / "h.jsonl"
    records = history_records()
    assert "checkout_ref" not in records[0] and records[2]["checkout_ref"] == "abc123"
    history.append(path, records + [{**records[3], "run_id": "bad", "checkout_ref": 7}])
    loaded, warnings = history.load(path)
    assert len(loaded) == 8 and warnings == [f"{path}:9: skipped a malformed record (checkout_ref: expected str, got int)"]
