"""history.jsonl (append, read back, corrupt lines) and `trend` over a history of several nights."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.fixtures import ROOT
from harness import cli
from harness import pipeline
from harness.results import history, rundir
from harness.errors import InputError

STEPS = ("test_greedy", "test_seeded", "test_logprobs", "test_penalties")


def rec(night: str, variant: str, failed: dict[str, int] | None = None, *, runs: int = 1,
        latency: float | None = 3.0, scenario: str = "sampler_mi250", run: str = "a",
        verdict: str = "fix confirmed", version: str = "0.22.0") -> dict:
    failed = failed or {}
    steps = {}
    for s in STEPS:
        steps[s] = {"runs": runs, "failed": failed.get(s, 0)}
        if failed.get(s):
            steps[s]["class"] = "vram_construction"
    n_failed = sum(failed.values())
    return {"version": 1, "scenario": scenario, "variant": variant, "baseline": variant == "without_fix",
            "run_id": f"{night}-{run}", "date": f"{night}T03:00:00+00:00", "night": night,
            "vllm_version": version, "vllm_commit": "", "verdict": verdict, "exit_code": 0,
            "runs": runs * len(STEPS), "passed": runs * len(STEPS) - n_failed, "failed": n_failed,
            "failures": {"vram_construction": n_failed} if n_failed else {},
            "release_latency_s": {"median": latency, "max": latency, "n": 0 if latency is None else 4},
            "steps": steps}


def nightly_history() -> list[dict]:
    """Seven nights of sampler_mi250: without the fix three steps always fail; with the fix all pass
    until test_penalties starts failing on the sixth night (once in three repeats), and test_seeded,
    which failed on the first night only, fails again on the last."""
    out = []
    nights = [f"2025-06-0{d}" for d in range(1, 8)]
    for i, night in enumerate(nights):
        out.append(rec(night, "without_fix", {"test_seeded": 3, "test_logprobs": 3, "test_penalties": 3},
                       runs=3, latency=None))
        with_fix_failed = {}
        if i == 0 or i == 6:
            with_fix_failed["test_seeded"] = 1
        if i >= 5:
            with_fix_failed["test_penalties"] = 1
        out.append(rec(night, "with_fix", with_fix_failed, runs=3, latency=3.0 + i / 10,
                       version="0.22.0" if i < 4 else "0.22.1"))
    # a second run on the last night, and another scenario that must not mix in
    out.append(rec(nights[-1], "with_fix", {}, runs=3, latency=5.0, run="b", version="0.22.1"))
    out.append(rec(nights[-1], "with_fix", {"test_greedy": 1}, scenario="other"))
    return out


def write_history(path: Path, records: list[dict], corrupt: bool = True) -> None:
    lines = [json.dumps(r) for r in records]
    if corrupt:
        lines.insert(3, '{"scenario": "sampler_mi250", "variant": "with_f')  # torn by a full disk
        lines.insert(6, "[1, 2, 3]")
        lines.insert(8, json.dumps({"scenario": "sampler_mi250", "variant": "x"}))  # not a record
        lines.insert(9, json.dumps({**records[0], "version": 99}))
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    monkeypatch.delenv(history.ENV, raising=False)


# --------------------------------------------------------------------------- reading and writing
def test_corrupt_lines_are_skipped_with_a_warning(tmp_path):
    path = tmp_path / "history.jsonl"
    write_history(path, nightly_history())
    records, warnings = history.load(path)
    assert len(records) == len(nightly_history())
    assert [w.split(": ", 1)[0] for w in warnings] == [f"{path}:{n}" for n in (4, 7, 9, 10)]
    assert "corrupt line" in warnings[0] and "newer version" in warnings[3]


def test_append_writes_whole_lines_and_never_twice(tmp_path):
    path = tmp_path / "sub" / "history.jsonl"
    assert history.append(path, [rec("2025-06-01", "a"), rec("2025-06-01", "b")]) == 2
    assert history.append(path, [rec("2025-06-01", "a"), rec("2025-06-02", "a")]) == 1
    records, warnings = history.load(path)
    assert warnings == [] and [(r["night"], r["variant"]) for r in records] == [
        ("2025-06-01", "a"), ("2025-06-01", "b"), ("2025-06-02", "a")]
    assert path.read_bytes().endswith(b"\n")


def test_concurrent_appends_do_not_interleave(tmp_path):
    path = tmp_path / "history.jsonl"
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_history import rec
        from harness.results import history, rundir
        w = sys.argv[1]
        for i in range(100):
            r = rec("2025-06-01", "v" + w, run=w + "-" + str(i))
            r["padding"] = "x" * 3000  # lines bigger than a pipe buffer
            history.append({str(path)!r}, [r])
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(w)], cwd=ROOT)
             for w in range(4)]
    assert [p.wait(timeout=60) for p in procs] == [0] * 4
    records, warnings = history.load(path)
    assert warnings == [] and len(records) == 400


def test_history_path_follows_the_environment(tmp_path, monkeypatch):
    assert history.history_path(tmp_path) == tmp_path / "history.jsonl"
    monkeypatch.setenv(history.ENV, str(tmp_path / "persistent.jsonl"))
    assert history.history_path(tmp_path) == tmp_path / "persistent.jsonl"


def test_commit_from_a_version():
    assert rundir.commit_of("0.22.0+g1a2b3c4d") == "1a2b3c4d"
    assert rundir.commit_of("0.11.1rc2.dev5+gabc1234.rocm644") == "abc1234"
    assert rundir.commit_of("0.22.0") == "" and rundir.commit_of("") == ""


# --------------------------------------------------------------------------- trend
def test_trend_per_night_pass_rate_latency_and_newly_flaky():
    (tr,) = history.trend(nightly_history(), "sampler_mi250", nights=5, recent=2)
    assert tr.nights == ["2025-06-03", "2025-06-04", "2025-06-05", "2025-06-06", "2025-06-07"]
    assert tr.variants == ["without_fix", "with_fix"] and tr.baseline == "without_fix"
    bad, good = tr.cells["without_fix"], tr.cells["with_fix"]
    assert bad["2025-06-03"].pass_rate == pytest.approx(3 / 12) and bad["2025-06-03"].latency is None
    assert good["2025-06-03"].pass_rate == 1 and good["2025-06-03"].latency == pytest.approx(3.2)
    assert good["2025-06-06"].pass_rate == pytest.approx(11 / 12)
    # two runs on the last night: pooled (22/24), latency the median of the runs' medians
    assert (good["2025-06-07"].passed, good["2025-06-07"].runs) == (22, 24)
    assert good["2025-06-07"].latency == pytest.approx((3.6 + 5.0) / 2)
    assert good["2025-06-07"].versions == ["0.22.1"]
    # test_penalties passed on 03..05 and fails on 06 and 07: newly flaky. test_seeded failed on the
    # first night, outside this window: within the window it is new too. The baseline's steps
    # failed all along: not new.
    assert [(f.variant, f.step, f.failed_nights) for f in tr.flaky] == [
        ("with_fix", "test_penalties", ["2025-06-06", "2025-06-07"]),
        ("with_fix", "test_seeded", ["2025-06-07"])]
    assert tr.flaky[0].failure_class == "vram_construction" and tr.flaky[0].earlier_nights == 3
    assert (tr.flaky[0].failures, tr.flaky[0].runs) == (2, 9)


def test_trend_over_all_nights_sees_the_earlier_failure():
    (tr,) = history.trend(nightly_history(), "sampler_mi250", nights=7, recent=2)
    # test_seeded failed on night 1 too: it was flaky before, not newly
    assert [(f.variant, f.step) for f in tr.flaky] == [("with_fix", "test_penalties")]


def test_trend_of_every_scenario_and_edge_cases():
    trends = history.trend(nightly_history())
    assert [t.scenario for t in trends] == ["other", "sampler_mi250"]
    assert trends[0].flaky == []  # one night: nothing to compare with
    assert history.trend(nightly_history(), "missing") == []
    with pytest.raises(InputError):
        history.trend([], nights=0)


def test_trend_shows_steps_that_never_ran(tmp_path, capsys):
    """A worker that hung on step 2 of 4 leaves 1/1 passed: the skipped steps keep the night red."""
    hung = rec("2025-06-02", "with_fix")
    hung["steps"] = {"test_greedy": {"runs": 1, "failed": 0}, "test_seeded": {"runs": 1, "failed": 1,
                     "class": "timeout"}, "test_logprobs": {"runs": 0, "failed": 0},
                     "test_penalties": {"runs": 0, "failed": 0}}
    hung["skipped"] = 2
    write_history(tmp_path / "history.jsonl", [rec("2025-06-01", "with_fix"), hung], corrupt=False)
    (tr,) = pipeline.trend(tmp_path, "sampler_mi250", html_out=tmp_path / "trend.html")
    cell = tr.cells["with_fix"]["2025-06-02"]
    assert (cell.passed, cell.runs, cell.skipped) == (1, 2, 2)
    assert "50% 1/2, 2 skipped" in capsys.readouterr().out
    assert "50% (1/2, 2 skipped)" in (tmp_path / "trend.html").read_text()


def test_a_rehearsals_verdict_says_so_in_its_trend_row(tmp_path, capsys):
    """A night rehearsed on vLLM-CPU is not the platform's own verdict: its row says `(rehearsal)`."""
    rehearsed = [{**rec("2025-06-02", v), "rehearsal": True} for v in ("without_fix", "with_fix")]
    write_history(tmp_path / "history.jsonl", [rec("2025-06-01", "with_fix"), *rehearsed], corrupt=False)
    (tr,) = pipeline.trend(tmp_path, "sampler_mi250", html_out=tmp_path / "trend.html")
    assert tr.verdicts == {"2025-06-01": ["fix confirmed"], "2025-06-02": ["fix confirmed (rehearsal)"]}
    out = capsys.readouterr().out
    assert out.count("(rehearsal)") == 1 and out.index("2025-06-02") < out.index("(rehearsal)")
    assert "fix confirmed (rehearsal)" in (tmp_path / "trend.html").read_text()


# --------------------------------------------------------------------------- the command
def test_trend_command_console_and_html(tmp_path, capsys):
    write_history(tmp_path / "history.jsonl", nightly_history())
    html_out = tmp_path / "pages" / "trend.html"
    rc = cli.main(["trend", "sampler_mi250", "--nights", "5", "--recent", "2", "--out", str(tmp_path),
                   "--html", str(html_out)])
    out, err = capsys.readouterr()
    assert rc == 0
    assert "sampler_mi250: last 5 night(s)" in out
    assert "2025-06-03" in out and "2025-06-02" not in out
    assert "newly flaky" in out and "with_fix / test_penalties: failed 2/9 run(s) on 2025-06-06, 2025-06-07" in out
    assert err.count("warning: ") == 4 and "skipped a corrupt line" in err
    page = html_out.read_text()
    assert page.count("<svg class=\"chart trend\"") == 2
    assert page.count("class=\"series\"") == 3  # pass rate of both variants; latency only with the fix
    assert "Newly flaky steps" in page and "test_penalties" in page
    assert "http" not in page.replace("http://www.w3.org/2000/svg", "")


def test_trend_takes_a_scenario_file(tmp_path, capsys):
    write_history(tmp_path / "history.jsonl", nightly_history(), corrupt=False)
    scenario = tmp_path / "sampler_mi250.yaml"  # not loaded when absent: its stem is the name
    assert cli.main(["trend", str(scenario), "--out", str(tmp_path)]) == 0
    assert "sampler_mi250: last 7 night(s)" in capsys.readouterr().out


def test_trend_without_history_is_a_usage_error(tmp_path, capsys):
    assert cli.main(["trend", "--out", str(tmp_path)]) == 2
    assert "no history yet" in capsys.readouterr().err
    write_history(tmp_path / "history.jsonl", nightly_history(), corrupt=False)
    assert cli.main(["trend", "nope", "--out", str(tmp_path)]) == 2
    assert "recorded: other, sampler_mi250" in capsys.readouterr().err


def test_trend_of_real_runs(tmp_path, capsys):
    """Runs of the simulated scenario, dated onto three nights, read back by `trend`."""
    from test_report_html import run_mini

    path = tmp_path / "history.jsonl"
    for day in ("2025-06-01", "2025-06-02", "2025-06-03"):
        run_dir = run_mini(tmp_path)
        meta = json.loads((run_dir / "run.json").read_text())
        meta["started"] = f"{day}T02:00:00+00:00"
        (run_dir / "run.json").write_text(json.dumps(meta))
        path.write_text("".join(line + "\n" for line in path.read_text().splitlines()
                                if json.loads(line)["run_id"] != run_dir.name))  # drop the undated lines
        assert cli.main(["report", str(run_dir)]) == 0
    capsys.readouterr()
    assert cli.main(["trend", "mini_lazy", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "mini_lazy: last 3 night(s)" in out and "no newly flaky step" in out
    assert "100% 3/3" in out and "33% 1/3" in out
