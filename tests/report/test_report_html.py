"""report.html and the memory timelines: a real simulated run, synthetic JUnit-only runs, escaping,
and the console's progress display."""

from __future__ import annotations

import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from junitparser import Failure, JUnitXml, Properties, Property, TestCase, TestSuite
from rich.console import Console

from harness import cli, pipeline
from harness.results import history, rundir
from harness.model import FailureClass, Outcome, StepResult
from harness.report import console, html, svg, timeline
from tests import sim_scenarios
from tests.fixtures import GIB

#: Three steps on a simulated MI250 GCD with a short lazy release: `without_fix` fails from the
#: second engine on, `with_fix` waits the memory out. About 2 s.
MINI_SCENARIO = sim_scenarios.lazy_release("mini_lazy", ["test_first", "test_second", "test_third"],
                                             release_delay_s=0.4)


def run_mini(out: Path, *extra: str) -> Path:
    """Run the mini scenario into results directory ``out``; return the new run directory."""
    out.mkdir(parents=True, exist_ok=True)
    scenario = out / "mini_lazy.yaml"
    scenario.write_text(MINI_SCENARIO)
    before = set((out / "mini_lazy").glob("*")) if (out / "mini_lazy").exists() else set()
    assert cli.main([str(scenario), "--out", str(out), *extra]) == 0
    (run_dir,) = set((out / "mini_lazy").glob("*")) - before
    return run_dir


@pytest.fixture(scope="module")
def mini_run(tmp_path_factory, monkeypatch_module) -> Path:
    return run_mini(tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    mp.delenv(history.ENV, raising=False)
    yield mp
    mp.undo()


class Page(HTMLParser):
    """Every element with its attributes and the chain of its ancestors' tags and classes."""

    VOID = {"meta", "br", "wbr", "img", "input", "link", "hr"}

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.elements: list[dict] = []
        self.stack: list[dict] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        el = {"tag": tag, "attrs": dict(attrs), "parents": list(self.stack), "text": []}
        self.elements.append(el)
        if tag not in self.VOID:
            self.stack.append(el)

    def handle_startendtag(self, tag, attrs):
        self.elements.append({"tag": tag, "attrs": dict(attrs), "parents": list(self.stack), "text": []})

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i]["tag"] == tag:
                del self.stack[i:]
                break

    def handle_data(self, data):
        self.text.append(data)
        for el in self.stack:
            el["text"].append(data)

    def find(self, tag: str, cls: str | None = None, within: dict | None = None) -> list[dict]:
        out = []
        for el in self.elements:
            if el["tag"] != tag:
                continue
            if cls is not None and cls not in el["attrs"].get("class", "").split():
                continue
            if within is not None and not any(p is within for p in el["parents"]):
                continue
            out.append(el)
        return out

    @staticmethod
    def text_of(el: dict) -> str:
        return "".join(el["text"])


def points(el: dict) -> list[tuple[float, float]]:
    return [tuple(map(float, p.split(","))) for p in el["attrs"].get("points", "").split()]


# --------------------------------------------------------------------------- a real simulated run
def test_report_html_shows_verdict_table_and_both_timelines(mini_run):
    text = (mini_run / "report.html").read_text()
    page = Page(text)
    (verdict,) = page.find("section", "verdict")
    assert "pass" in verdict["attrs"]["class"].split()
    assert "mini_lazy: PASS — fix confirmed" in " ".join(Page.text_of(verdict).split())

    cards = {c["attrs"]["data-variant"]: c for c in page.find("div", "card") if "data-variant" in c["attrs"]}
    assert list(cards) == ["without_fix", "with_fix"]
    expected_failures = {"without_fix": 2, "with_fix": 0}
    for variant, card in cards.items():
        (svg,) = page.find("svg", "chart", within=card)
        lines = page.find("polyline", "memory", within=svg)
        assert lines and all(len(points(line)) >= 6 for line in lines)
        assert page.find("polyline", "threshold", within=svg), "the start threshold is drawn"
        phases = {r["attrs"]["class"].split()[1] for r in page.find("rect", "phase", within=svg)}
        assert {"construct", "workload", "teardown"} <= phases
        failures = page.find("g", "failure", within=svg)
        assert len(failures) == expected_failures[variant]
        assert all(f["attrs"]["data-class"] == "vram_construction" for f in failures)
    actions = {Page.text_of(t).split(": after ")[1].split(":")[0]
               for t in page.find("title", within=cards["with_fix"]) if ": after " in Page.text_of(t)}
    assert actions == {"engine_core_shutdown", "del_llm", "cleanup_dist_env", "wait_memory"}
    assert "failed" in cards["without_fix"]["attrs"]["class"].split()

    # steps × variants: the failed cells open the error
    rows = page.find("tr", within=page.find("table", "steps")[0])[1:]
    assert len(rows) == 3
    details = page.find("details")
    assert len(details) == 2
    assert all("Free memory on device cuda:0" in Page.text_of(d) for d in details)
    assert "vram_construction" in Page.text_of(rows[1])

    # one self-contained file: nothing fetched from anywhere
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert "<link" not in text and "@import" not in text and "<script src" not in text


def test_timeline_from_events_marks_failures_and_threshold(mini_run):
    tls = timeline.from_results(rundir.read(mini_run), ["without_fix", "with_fix"])
    bad, good = tls["without_fix"], tls["with_fix"]
    threshold = round((1 - 0.92) * 64 * GIB)
    for tl in (bad, good):
        assert tl.total == 64 * GIB and tl.duration > 0 and tl.source == "events"
        assert [s.name for s in tl.steps] == ["test_first", "test_second", "test_third"]
        ts = [p.t for p in tl.points]
        assert ts == sorted(ts) and ts[0] >= 0
        # the construction that failed had no threshold event: it comes from the plan's utilisation
        assert all(abs(s.threshold - threshold) <= 1 for s in tl.steps)
    assert [s.outcome for s in bad.steps] == ["passed", "failed", "failed"]
    failed = bad.steps[1]
    assert failed.phase == "construct" and failed.fail_t is not None
    construct = [sp for sp in bad.spans if sp.step == 1 and sp.phase == "construct"][0]
    assert failed.fail_t == pytest.approx(construct.end)
    assert "Free memory on device" in failed.message
    # with the fix the memory comes back under the threshold after every teardown
    after_wait = [p.used for p in good.points if p.label == "after_wait_memory"]
    assert len(after_wait) == 3 and all(u <= threshold for u in after_wait)
    assert max(p.used for p in bad.points) > 50 * GIB
    json.dumps(bad.to_dict())  # plain data


def test_run_appends_history_once(mini_run):
    hist = mini_run.parent.parent / "history.jsonl"
    records, warnings = history.load(hist)
    assert warnings == [] and [r["variant"] for r in records] == ["without_fix", "with_fix"]
    bad, good = records
    assert bad["baseline"] and not good["baseline"]
    assert bad["failures"] == {"vram_construction": 2} and good["failures"] == {}
    assert bad["steps"]["test_second"] == {"runs": 1, "failed": 1, "class": "vram_construction"}
    assert good["steps"]["test_second"] == {"runs": 1, "failed": 0}
    assert good["release_latency_s"]["n"] == 3 and good["release_latency_s"]["median"] >= 0.3
    assert bad["release_latency_s"]["median"] is None  # the legacy teardown never releases
    assert good["verdict"] == "fix confirmed" and good["variant_verdict"] == "fix confirmed"
    assert good["vllm_version"] == "sim" and good["night"] == good["date"][:10]
    # rebuilding the report of the same run does not count it twice
    assert cli.main(["report", str(mini_run)]) == 0
    assert len(history.load(hist)[0]) == 2


# --------------------------------------------------------------------------- synthetic run directories
def write_junit_run(run_dir: Path, message: str, step_name: str) -> Path:
    """A run directory with JUnit files only (as downloaded from CI): no events, no logs."""
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({
        "version": 1, "scenario": "demo", "run_id": "r1", "baseline": "base", "variants": ["base", "fix"],
        "repeat": 1, "incomplete": False, "started": "2025-06-12T03:14:07+00:00", "backend": "sim",
        "platform": "rocm", "substitutions": ["model: <x> -> <y>"], "orphans": []}))
    for variant, fail in (("base", True), ("fix", False)):
        suite = TestSuite(variant)
        suite.add_property("vllm_version", "0.22.0+g1a2b3c4")
        cases = []
        for i, name in enumerate(["step_a", step_name]):
            case = TestCase(name, classname="demo", time=1.5)
            props = Properties()
            failed = fail and i == 1
            values = {"failure_class": "vram_construction" if failed else "none", "construct_s": "0.5",
                      "mem_before_construct_bytes": str((40 if failed else 1) * GIB)}
            if failed:
                values["phase"] = "construct"
            else:
                values.update(mem_after_construct_bytes=str(50 * GIB), workload_s="0.5",
                              mem_after_workload_bytes=str(50 * GIB), threshold_bytes=str(6 * GIB))
            values.update(action_del_llm_s="0.1", mem_after_del_llm_bytes=str((40 if fail else 1) * GIB))
            for k, v in values.items():
                props.add_property(Property(k, v))
            case.append(props)
            if failed:
                failure = Failure(message, "vram_construction")
                failure.text = "Traceback (most recent call last):\n" + message
                case.result = [failure]
                case.system_err = "log line <with> & ampersand"
            cases.append(case)
        suite.add_testcases(cases)
        xml = JUnitXml()
        xml.add_testsuite(suite)
        xml.write(str(run_dir / f"{variant}.xml"))
    return run_dir


def test_everything_from_the_run_is_escaped(tmp_path):
    evil = "ValueError: <script>alert('x')</script> & \"quoted\""
    run_dir = write_junit_run(tmp_path / "demo" / "r1", evil, "step_<b>bold</b>")
    data = pipeline.report(run_dir, record_history=False)
    text = (run_dir / "report.html").read_text()
    assert "<script>alert" not in text and "<b>bold</b>" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;quoted&quot;" in text
    assert "log line &lt;with&gt; &amp; ampersand" in text
    assert "model: &lt;x&gt; -&gt; &lt;y&gt;" in text
    assert data["verdict"] == "fix confirmed"
    assert text.count("<script>") == 1  # only the page's own drawing check


def test_timeline_rebuilt_from_junit_when_there_are_no_events(tmp_path):
    run_dir = write_junit_run(tmp_path / "demo" / "r1", "ValueError: Free memory on device", "step_b")
    pipeline.report(run_dir, record_history=False)
    page = Page((run_dir / "report.html").read_text())
    svgs = page.find("svg", "chart")
    assert len(svgs) == 2 and all(points(page.find("polyline", "memory", within=s)[0]) for s in svgs)
    assert len(page.find("g", "failure", within=svgs[0])) == 1
    assert "approximate: rebuilt from JUnit" in "".join(page.text)
    # the history takes the commit from the version's local part
    (record_base, _) = history.record(pipeline.summary_of(run_dir), run_dir)
    assert record_base["vllm_commit"] == "1a2b3c4"


def test_history_is_not_written_outside_a_results_layout(tmp_path, monkeypatch):
    monkeypatch.delenv(history.ENV, raising=False)
    run_dir = write_junit_run(tmp_path / "downloaded", "ValueError: x", "step_b")  # not <out>/demo/<id>
    pipeline.report(run_dir, record_history=False)
    assert not list(tmp_path.rglob("history.jsonl"))


def test_a_broken_picture_does_not_cost_the_verdict(tmp_path, monkeypatch, capsys):
    run_dir = write_junit_run(tmp_path / "demo" / "r1", "ValueError: x", "step_b")

    def broken(*a, **k):
        raise RuntimeError("boom")
    monkeypatch.setattr(html, "render", broken)
    data = pipeline.report(run_dir, record_history=False)
    assert data["exit_code"] == 0 and (run_dir / "summary.json").exists()
    assert "report.html not written: RuntimeError: boom" in capsys.readouterr().err


def test_a_hung_step_runs_on_to_when_it_was_stopped():
    """A worker stuck in a teardown sends no events; the JUnit time (the runner stopped it after 60 s)
    carries its chart on to that moment, with the gap drawn as 'no samples'."""
    def ev(t, event, **kw):
        return {"t": 1000.0 + t, "event": event, "variant": "with_fix", "repeat": 0, "step": "test_hang",
                "index": 0, **kw}
    events = [ev(0, "step_start"), ev(0, "phase_start", phase="construct"),
              ev(0.3, "memory", used_bytes=60 * GIB, total_bytes=64 * GIB, label="after_construct"),
              ev(0.3, "phase_end", phase="construct"), ev(0.4, "phase_start", phase="teardown"),
              ev(0.5, "memory", used_bytes=60 * GIB, total_bytes=64 * GIB, label="after_del_llm"),
              ev(0.5, "action", name="del_llm", used_bytes=60 * GIB)]
    tl = timeline.from_events("with_fix", events, {0: {0: 0.92}}, {("test_hang", 0): 60.0})
    (st,) = tl.steps
    assert st.outcome == "unfinished" and st.events_end == pytest.approx(0.5)
    assert st.fail_t == pytest.approx(60.0) and tl.duration == pytest.approx(60.0)
    (teardown,) = [sp for sp in tl.spans if sp.phase == "teardown"]
    assert teardown.end == pytest.approx(60.0)
    svg = Page(html.memory_chart(tl, {"del_llm": "#000"}, {("test_hang", 0): "timeout"}, {}))
    (gap,) = svg.find("line", "nosamples")
    assert float(gap["attrs"]["x2"]) > float(gap["attrs"]["x1"]) + 300  # most of the chart's width
    (failure,) = svg.find("g", "failure")
    assert failure["attrs"]["data-class"] == "timeout"
    # without the JUnit time the chart ends at the last event, as before
    assert timeline.from_events("with_fix", events).duration == pytest.approx(0.5)


def test_nice_ticks():
    assert svg.nice_ticks(64, 4) == [0, 20, 40, 60, 80]
    assert svg.nice_ticks(2.5, 5) == [0, 0.5, 1, 1.5, 2, 2.5]
    assert svg.nice_ticks(0) == [0.0, 1.0]


# --------------------------------------------------------------------------- console
def step_events():
    yield {"event": "worker_start"}
    yield {"event": "step_start", "step": "test_a", "index": 0}
    yield {"event": "phase_start", "phase": "construct"}
    yield {"event": "memory", "used_bytes": 3 * GIB}
    yield {"event": "step_end", "step": "test_a", "outcome": "passed"}
    yield {"event": "step_start", "step": "test_b", "index": 1}
    yield {"event": "phase_start", "phase": "construct"}
    yield {"event": "step_end", "step": "test_b", "outcome": "failed", "phase": "construct",
           "error_type": "ValueError", "message": "Free memory on device cuda:0"}


def test_console_plain_lines_when_not_a_terminal():
    buf = io.StringIO()
    con = Console(file=buf, force_terminal=False, width=200)
    with console.Progress(2, console=con) as progress:
        assert progress._live is None
        for ev in step_events():
            progress("with_fix", 0, ev)
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("PASS with_fix r0 test_a") and "peak 3.00 GiB" in lines[0]
    assert lines[1].startswith("FAIL with_fix r0 test_b") and "construct: ValueError: Free memory" in lines[1]
    assert "\x1b" not in buf.getvalue()


def test_console_lines_for_steps_the_worker_never_finished():
    buf = io.StringIO()
    con = Console(file=buf, force_terminal=False, width=200)
    with console.Progress(3, console=con) as progress:
        for ev in step_events():
            progress("with_fix", 0, ev)
        progress.worker_done("with_fix", 0, [
            StepResult("test_a", 0, Outcome.PASSED),  # announced already by its step_end
            StepResult("test_b", 0, Outcome.FAILED, FailureClass.VRAM_CONSTRUCTION, message="Free memory"),
            StepResult("test_c", 0, Outcome.FAILED, FailureClass.TIMEOUT, message="step ran past 60 s"),
            StepResult("test_d", 0, Outcome.SKIPPED, message="not run: the worker was stopped"),
        ])
    lines = buf.getvalue().splitlines()
    assert len(lines) == 4
    assert lines[2] == "FAIL with_fix r0 test_c  timeout: step ran past 60 s"
    assert lines[3].startswith("SKIP with_fix r0 test_d")


def test_console_live_display_on_a_terminal():
    buf = io.StringIO()
    con = Console(file=buf, force_terminal=True, width=120)
    with console.Progress(2, console=con) as progress:
        assert progress._live is not None
        for ev in list(step_events())[:4]:
            progress("with_fix", 0, ev)
        shown = progress._render()
        row = " ".join(str(c) for col in shown.columns for c in col._cells)
    assert "step 1/2 test_a" in row and "construct" in row and "3.00 GiB" in row
    assert "step 1/2 test_a" in buf.getvalue()
