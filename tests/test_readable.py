"""Failures you can read: whole console lines, a log that classifies, decoded text beside token ids,
messages in a single-variant report, the word "rehearsal", charts on one time scale."""

from __future__ import annotations

import io
import json

from rich.console import Console

from tests.fixtures import run_summary
from harness import cli
from harness.model import Outcome, StepResult, VariantResult
from harness.report import console, html, markdown
from harness.run import runner
from harness.worker import expect
from tests.sim_scenarios import bare_vs_fixed

GIB = 2**30


def test_console_fail_line_keeps_the_whole_message_and_names_the_culprit():
    buf = io.StringIO()
    msg = ("Free memory on device cuda:0 (5.90/64.00 GiB) on startup is less than desired GPU memory utilization "
           "(0.9, 57.60 GiB). Decrease GPU memory utilization or reduce GPU memory used by other processes. [end]")
    with console.Progress(2, console=Console(file=buf, force_terminal=False, width=100)) as progress:
        for ev in [{"event": "step_start", "step": "a", "index": 0},
                   {"event": "memory", "label": "before_construct", "used_bytes": GIB},
                   {"event": "memory", "label": "after_construct", "used_bytes": 58 * GIB},
                   {"event": "memory", "label": "after_del_llm", "used_bytes": 58 * GIB},
                   {"event": "step_end", "step": "a", "outcome": "passed"},
                   {"event": "step_start", "step": "b", "index": 1},
                   {"event": "memory", "label": "before_construct", "used_bytes": 58 * GIB},
                   {"event": "step_end", "step": "b", "outcome": "failed", "phase": "construct",
                    "error_type": "ValueError", "message": msg}]:
            progress("v", 0, ev)
    fail = buf.getvalue().splitlines()[1]
    assert fail.endswith("[end] — culprit: a (held 57.00 GiB after del_llm; still held after its worker's last step)")
    assert "peak 58.00 GiB" in fail


def test_the_simulated_workers_log_can_be_classified(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(bare_vs_fixed("log", release_delay_s=0.1))
    cli.main([str(path), "--out", str(tmp_path / "out"), "--variant", "without_fix"])
    (rd,) = (tmp_path / "out" / "log").iterdir()
    log = rd / "logs" / "without_fix-r0.log"
    assert "[harness] step seeded: failed in construct" in log.read_text()
    capsys.readouterr()
    assert cli.main(["classify", str(log)]) == 0
    assert capsys.readouterr().out.strip() == "vram_construction"


def test_token_ids_come_with_their_decoded_text():
    comp = {"token_ids": [5, 6, 7], "text": " the cat", "finish_reason": "length", "stop_reason": None, "logprobs": None}
    results = [[[{"prompt": "p", "completions": [comp]}]], [[{"prompt": "p", "completions": [comp]}]]]
    (fail,) = expect.distinct([[0, 1]], results, None)
    assert "[5, 6, 7] ' the cat'" in fail


def test_a_single_variant_report_shows_its_failure_messages():
    summary = {"scenario": "one", "verdict": "baseline broken", "exit_code": 1, "variants": ["only"], "transitions": {},
               "cases": [{"classname": "one", "step": "s1", "variants": {"only": {
                   "outcome": "failed", "failure_class": "assertion", "message": "lengths: 3 tokens < min_tokens 8",
                   "runs": 1, "failed": 1, "vram": {"k": 0, "n": 1, "rate": 0, "low": 0, "high": 1}}}}]}
    md = markdown.render(run_summary(summary))
    # report.md escapes HTML (Buildkite and GitHub render it): the "<" shows as "<" once rendered
    assert "### Failures" in md and "lengths: 3 tokens &lt; min_tokens 8" in md


def test_a_rehearsal_says_so(tmp_path, monkeypatch):
    path = tmp_path / "r.yaml"
    path.write_text(bare_vs_fixed("reh", release_delay_s=0.1).replace("backend: sim\n", "backend: vllm\n"))
    monkeypatch.setenv("HARNESS_PLATFORM", "cpu")
    monkeypatch.setattr("harness.run.plan._tiny_llama", lambda: "/tiny")  # no model build for this check

    def worker(rplan, variant, repeat, run_dir, ledger, opts):  # the engines are not what is tested here
        return VariantResult(variant.name, variant.profile, [StepResult(s["name"], repeat, Outcome.PASSED)
                                                             for s in rplan.steps], {"platform": "cpu"}, [], "ok")

    monkeypatch.setattr(runner, "run_worker", worker)
    monkeypatch.setattr("harness.run.engineargs.check", lambda *a, **k: [])
    said = []
    result = runner.run(path, runner.RunOptions(out=tmp_path / "out", announce=said.append))
    assert said[0].startswith("rehearsal: this machine has no rocm; every step runs for real on cpu")
    assert json.loads((result.run_dir / "run.json").read_text())["rehearsal"] is True
    from harness import pipeline

    data = pipeline.report(result.run_dir, record_history=False)
    assert "**rehearsal**" in (result.run_dir / "report.md").read_text() and data["rehearsal"] is True


def test_charts_share_one_time_scale_and_a_cpu_chart_fits_its_trace():
    from harness.report import timeline

    def tl(name, seconds):
        return timeline.Timeline(name, total=24 * GIB, duration=seconds,
                                 points=[timeline.Point(0.0, GIB, "before_construct", 0),
                                         timeline.Point(seconds, GIB, "after_del_llm", 0)])

    tls = {"a": tl("a", 10.0), "b": tl("b", 2.0)}
    cpu = html._charts(run_summary({"platform": "cpu", "baseline": "a"}), ["a", "b"], tls, {}, {}, 1)
    assert "time axis spans 10.0 s" in cpu and "memory axes fit the trace" in cpu
    assert ">24</text>" not in cpu  # not host RAM's size
    gpu = html._charts(run_summary({"platform": "rocm", "baseline": "a"}), ["a", "b"], tls, {}, {}, 1)
    assert ">24</text>" in gpu and "fit the trace" not in gpu  # a device: its size is the scale
