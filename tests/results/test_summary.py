"""The typed run summary: summary.json loads back into the same `RunSummary`, and the reports are
rendered from one parse of each JUnit file."""

from __future__ import annotations

import json

import pytest

from harness import RESULT_VERSION
from harness import pipeline
from harness.results import history
from harness.errors import InputError
from harness.results import junitread, summary as results_summary
from harness.results.summary import RunSummary
from harness.results.stats import Rate
from tests.fixtures import ASSERT, OK, VRAM, write_run, write_variant


@pytest.fixture(params=[1, 4], ids=["single", "repeats"])
def run_dir(tmp_path, request):
    repeat = request.param
    rd = write_run(tmp_path / "sampler_mi250" / "r1", variants=("no_fix", "with_fix", "other"), repeat=repeat,
                   orphans=[{"pid": 7, "cmdline": "python -m vllm", "used_bytes": 2**30}],
                   substitutions=["model: a -> b"])
    write_variant(rd, "no_fix", {"a": OK, "b": VRAM, "c": [VRAM, OK, VRAM, OK][:repeat] if repeat > 1 else VRAM},
                  repeats=repeat)
    write_variant(rd, "with_fix", {"a": OK, "b": OK, "c": OK}, repeats=repeat)
    write_variant(rd, "other", {"a": ASSERT, "b": VRAM, "c": OK}, repeats=repeat)
    return rd


def test_summary_json_round_trip(run_dir):
    built = pipeline.report(run_dir, record_history=False)
    data = built.to_json()
    assert json.loads((run_dir / "summary.json").read_text()) == data
    loaded = RunSummary.from_json(json.loads(json.dumps(data)))
    assert loaded.to_json() == data
    assert loaded == built and built == data  # a mapping of its JSON form
    assert loaded.results is None and built.results is not None
    again = results_summary.load(run_dir / "summary.json")
    assert again == loaded and again.to_json() == data
    # typed all the way down
    assert again.version == RESULT_VERSION and again.baseline == "no_fix"
    assert again.candidates["with_fix"].verdict == built["candidates"]["with_fix"]["verdict"]
    assert isinstance(again.cases[1].variants["no_fix"].vram, Rate)
    assert again.cases[1].variants["no_fix"].failure_class == "vram_construction"
    assert isinstance(again.stats.pooled_vram["no_fix"], Rate)
    assert again.transitions["with_fix"].cases[1].transition == "fixed"
    assert again.orphans == [{"pid": 7, "cmdline": "python -m vllm", "used_bytes": 2**30}]
    if again.repeat > 1:
        assert again.stats.fisher["with_fix"].table[0] == [again.stats.pooled_vram["no_fix"].k,
                                                           again.stats.pooled_vram["no_fix"].n
                                                           - again.stats.pooled_vram["no_fix"].k]


def test_a_changed_field_breaks_the_round_trip(run_dir):
    """The equality above is not vacuous: any difference in the JSON form shows."""
    data = pipeline.summary_of(run_dir).to_json()
    data["cases"][0]["variants"]["no_fix"]["runs"] += 1
    assert RunSummary.from_json(data) != pipeline.summary_of(run_dir)


@pytest.mark.parametrize("change, words", [
    (lambda d: d.update(version=RESULT_VERSION + 1), "version: unsupported"),
    (lambda d: d.pop("verdict"), "not a run summary: KeyError"),
    (lambda d: d.update(cases="x"), "not a run summary"),
])
def test_summary_json_that_cannot_be_loaded(run_dir, change, words):
    data = pipeline.summary_of(run_dir).to_json()
    change(data)
    (run_dir / "summary.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match=f"summary.json: {words}"):
        results_summary.load(run_dir / "summary.json")


def test_each_junit_file_is_parsed_once(run_dir, monkeypatch):
    monkeypatch.delenv(history.ENV, raising=False)
    parsed = []
    real = junitread.load
    monkeypatch.setattr(junitread, "load", lambda path: parsed.append(path.name) or real(path))
    pipeline.report(run_dir)
    assert sorted(parsed) == ["no_fix.xml", "other.xml", "with_fix.xml"]
    assert (run_dir / "report.html").is_file()
    assert history.load(history.history_path(run_dir.parent.parent))[0]  # the history got its lines


def test_history_records_from_a_summary_loaded_back(run_dir, monkeypatch):
    """summary.json carries no parsed cases: the records are then read from the run directory."""
    monkeypatch.delenv(history.ENV, raising=False)
    fresh = history.record(pipeline.summary_of(run_dir))
    pipeline.report(run_dir, record_history=False)
    loaded = history.record(results_summary.load(run_dir / "summary.json"), run_dir)
    assert fresh == loaded and [r["variant"] for r in fresh] == ["no_fix", "with_fix", "other"]
