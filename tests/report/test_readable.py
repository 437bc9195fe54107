"""Failures you can read: whole console lines, a log that classifies, decoded text beside token ids,
messages in a single-variant report, the word "rehearsal", charts on one time scale."""

from __future__ import annotations

import io
import json
import re

from rich.console import Console

from tests.fixtures import GIB, run_summary
from harness import cli
from harness.model import Outcome, StepResult, VariantResult
from harness.report import console, html, markdown
from harness.run import runner
from harness.worker import expect
from tests.sim_scenarios import bare_vs_fixed


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
                    "error_type": "ValueError", "message": msg},
                   {"event": "step_start", "step": "c", "index": 2},
                   {"event": "memory", "label": "before_construct", "used_bytes": 58 * GIB},
                   {"event": "step_end", "step": "c", "outcome": "failed", "phase": "construct",
                    "error_type": "ValueError", "message": msg}]:
            progress("v", 0, ev)
    passed, fail, again = buf.getvalue().splitlines()
    assert fail.endswith("[end] — culprit: a (held 57.00 GiB after del_llm; still held after its worker's last step)")
    assert "peak 58.00 GiB" in passed
    # b and c never built an engine: the 58 GiB they saw was a's
    assert "no engine built" in fail and "peak" not in fail
    # the same message and culprit again: named, not repeated
    assert again == "FAIL v r0 c (0.0s, no engine built)  construct: same error as b (culprit: a)"


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
    md = (result.run_dir / "report.md").read_text()
    assert "**rehearsal**" in md and data["rehearsal"] is True
    # where the verdict is, not only in the small print: report.md's title, report.html's headline
    assert md.splitlines()[0].endswith(") — rehearsal")
    assert "— not reproduced (rehearsal)</h1>" in (result.run_dir / "report.html").read_text()
    buf = io.StringIO()
    console.summary_table(data, Console(file=buf, width=200))
    assert "verdict: not reproduced (rehearsal: this machine lacks the scenario's platform)" in buf.getvalue()


def test_one_culprits_message_is_said_once_with_its_victims():
    held = {"step": "a", "held_bytes_after": {"del_llm": 57 * GIB}, "freed_after": None}
    msg = "ValueError: Free memory on device cuda:0 (5.90/64.00 GiB) on startup is less than desired"
    vram = {"outcome": "failed", "failure_class": "vram_construction", "message": msg, "culprit": held}
    summary = run_summary({
        "scenario": "s", "variants": ["without_fix", "with_fix"], "baseline": "without_fix",
        "cases": [{"step": "a", "variants": {"without_fix": {}, "with_fix": {}}}] +
                 [{"step": v, "variants": {"without_fix": vram, "with_fix": {}}} for v in ("b", "c", "d")],
        "transitions": {"with_fix": {"cases": [{"step": v, "transition": "fixed", "baseline": vram, "candidate": {}}
                                               for v in ("b", "c", "d")]}}})
    md = markdown.render(summary)
    assert md.count("Free memory on device") == 1 and md.count("held 57.00 GiB after del_llm") == 1
    assert "| without_fix | culprit: a (held 57.00 GiB after del_llm; still held after its worker's last step) " \
           "| 3: b, c, d |" in md
    assert md.count("culprit a: see Culprits") == 3  # each transition points at it
    buf = io.StringIO()
    console.summary_table(summary, Console(file=buf, width=300))
    assert buf.getvalue().count("culprit: a (held") == 1 and "it failed 3 construction(s): b, c, d" in buf.getvalue()


def test_each_chart_has_its_own_time_scale_and_a_cpu_chart_fits_its_trace():
    from harness.report import timeline

    def tl(name, seconds):
        return timeline.Timeline(name, total=24 * GIB, duration=seconds,
                                 points=[timeline.Point(0.0, GIB, "before_construct", 0),
                                         timeline.Point(seconds, GIB, "after_del_llm", 0)])

    tls = {"a": tl("a", 10.0), "b": tl("b", 2.0)}
    cpu = html._charts(run_summary({"platform": "cpu", "baseline": "a"}), ["a", "b"], tls, {}, {}, 1)
    assert "its own variant's run (a 10.0 s, b 2.0 s)" in cpu and "memory axes fit the trace" in cpu
    chart_a, chart_b = re.findall(r"<svg.*?</svg>", cpu)
    assert ">10</text>" in chart_a and ">2</text>" in chart_b and ">10</text>" not in chart_b
    assert ">24</text>" not in cpu  # not host RAM's size
    gpu = html._charts(run_summary({"platform": "rocm", "baseline": "a"}), ["a", "b"], tls, {}, {}, 1)
    assert ">24</text>" in gpu and "fit the trace" not in gpu  # a device: its size is the scale


def test_step_numbers_of_a_baseline_that_fails_fast_do_not_overprint():
    """Nine failures within a few seconds after a long first step, each numbered: the numbers take
    two rows where they must, never overlap within one, and the threshold is named in the legend."""
    from harness.report import svg, timeline

    starts = [0.0] + [30 + 0.6 * i for i in range(1, 10)]
    steps = [timeline.StepMark(i, i, f"s{i}", 0, t, t + 0.5, "passed" if i == 0 else "failed", "construct",
                               "Free memory", t + 0.3, 5 * GIB) for i, t in enumerate(starts)]
    tl = timeline.Timeline("without_fix", total=64 * GIB, duration=36.0, steps=steps,
                           points=[timeline.Point(0.0, GIB, "before_construct", 0),
                                   timeline.Point(36.0, 59 * GIB, "after_del_llm", 9)])
    chart = svg.memory_chart(tl, {}, {}, {f"s{i}": i + 1 for i in range(10)})
    labels = [(float(x), float(y), text) for x, y, text in
              re.findall(r'<text class="stepno" x="([\d.]+)" y="([\d.]+)"[^>]*>(\d+)<title>', chart)]
    assert len({y for _, y, _ in labels}) == 2, "a second row was needed"
    for row in {y for _, y, _ in labels}:
        placed = sorted((x, text) for x, y, text in labels if y == row)
        for (x0, t0), (x1, _) in zip(placed, placed[1:]):
            assert x1 - x0 >= svg.DIGIT_W * len(t0), f"{t0} overprints its neighbour: {placed}"
    assert len(labels) >= 8  # most numbers still shown; the rest keep their line, cross and tooltip
    assert "next engine starts only below" not in chart  # not on the plot: in the legend
    legend = html._legend(tl, {})
    assert "the next engine starts only below 5.00 GiB used" in legend
