"""Hostile input: text that cannot go into XML or a terminal, names that would become paths outside
the results directory, files that never end or block, odd history records, odd option values.

Each must give one line naming the file (or option) and key, exit 2, and nothing written; text
from a run must reach every report intact and harmless.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from xml.etree import ElementTree

import pytest

from tests.fixtures import run_summary
from harness.results import history
from harness.report import markdown
from harness import xmlsafe
from harness.results.junitread import read_cases
from tests import sim_scenarios
from tests.fixtures import ROOT, assert_one_line_error, cli

# --------------------------------------------------------------------------- XML-safe text
AWKWARD = ["x\ty", "x y", "x\ny", "x\ry", "\x1b[31mERROR\x1b[0m", "nul\x00byte", "\ufffe\uffff", "lone \ud800 \udfff",
           "bell\x07 and \x7f", "literal \\x1b and \\x5c and \\u0000", "C:\\x\\u12", "trailing \\", "\\\\x09",
           "".join(chr(i) for i in range(32)), "<b>&amp;</b> \"quoted\" 'single'", "ünïcødé ✓ 𝔘"]


@pytest.mark.parametrize("attribute", [True, False], ids=["attribute", "text"])
def test_every_text_survives_xml_and_comes_back_as_it_was(attribute):
    for text in AWKWARD:
        elem = ElementTree.Element("case", {"name": text} if attribute else {})
        if not attribute:
            elem.text = text
        xmlsafe.sanitise(elem)
        data = ElementTree.tostring(elem, encoding="utf-8")
        back = ElementTree.fromstring(data)  # expat refuses what XML 1.0 cannot carry
        read = back.get("name") if attribute else back.text
        assert xmlsafe.decode(read) == text, (text, data)


def test_escaping_is_one_to_one():
    encoded = [xmlsafe.encode(t, attribute=True) for t in AWKWARD]
    assert len(set(encoded)) == len(AWKWARD)
    assert xmlsafe.encode("x\ty", attribute=True) != xmlsafe.encode("x y", attribute=True)
    assert xmlsafe.decode("plain text, C:\\path\\x") == "plain text, C:\\path\\x"  # foreign files unchanged


HOOK = '''\
def boom(ctx):
    print("\\x1b[31mERROR\\x1b[0m nul\\x00 \\ufffe bell\\x07 [/] junk", flush=True)
    raise RuntimeError("\\x1b[31mbad\\x1b[0m [/] <svg onload=alert(1)> \\x00\\x07 \\ud800")
'''


def test_control_characters_in_names_messages_and_logs_reach_junit_and_reports(tmp_path):
    """An ANSI colour, NUL, U+FFFE, a lone surrogate and rich-markup brackets in a failing teardown's
    output and message, and two step names that differ only by a tab and a space: the run finishes,
    every variant has its JUnit, and the names and message read back exactly."""
    (tmp_path / "hook.py").write_text(HOOK)
    scenario = tmp_path / "awkward.yaml"
    scenario.write_text(sim_scenarios.with_profiles(
        "awkward", 'hooked: {after: [{call: "hook:boom"}, engine_core_shutdown, gc_unfreeze, gc_collect]}',
        "a: {profile: hooked}, b: {profile: fixed}", ["x\\ty", "x y", "esc \\e <b>&amp; \\\\x1b"]))
    proc = cli(str(scenario), "--out", str(tmp_path / "out"), timeout=180)
    output = proc.stdout + proc.stderr
    assert "internal error" not in output and "Traceback" not in output, output
    assert proc.returncode in (0, 1), output
    run_dir = next((tmp_path / "out" / "awkward").iterdir())
    assert json.loads((run_dir / "run.json").read_text())["incomplete"] is False
    cases = {v: read_cases(run_dir / f"{v}.xml") for v in ("a", "b")}
    assert [c.name for c in cases["a"]] == ["x\ty", "x y", "esc \x1b <b>&amp; \\x1b"]
    assert [c.name for c in cases["b"]] == ["x\ty", "x y", "esc \x1b <b>&amp; \\x1b"]
    first = cases["a"][0]
    assert first.message == "RuntimeError: \x1b[31mbad\x1b[0m [/] <svg onload=alert(1)> \x00\x07 \ud800"
    text = (run_dir / "a.xml").read_text(encoding="utf-8")
    assert "\x1b" not in text and "\x00" not in text
    report = (run_dir / "report.md").read_text(encoding="utf-8")
    assert "<svg" not in report and "<b>" not in report and "\x1b" not in report
    assert "\x1b" not in proc.stdout  # the console shows it escaped, never drives the terminal


NASTY = '''\
class Nasty(Exception):
    def __str__(self):
        raise RuntimeError("a message that cannot be shown")

def boom(ctx):
    raise Nasty()
'''


def test_an_exception_whose_str_raises_is_still_a_step_failure(tmp_path):
    (tmp_path / "nasty.py").write_text(NASTY)
    scenario = tmp_path / "nasty.yaml"
    scenario.write_text(sim_scenarios.with_profiles(
        "nasty", 'hooked: {after: [{call: "nasty:boom"}, engine_core_shutdown]}', "a: {profile: hooked}", ["s1"]))
    proc = cli(str(scenario), "--out", str(tmp_path / "out"), timeout=180)
    assert "internal error" not in proc.stderr and proc.returncode in (0, 1), proc.stdout + proc.stderr
    (case,) = read_cases(next((tmp_path / "out" / "nasty").iterdir()) / "a.xml")
    assert case.failed and case.message == "Nasty: <Nasty: its str() raised>"


# --------------------------------------------------------------------------- report.md
def test_report_md_escapes_html_from_step_names_and_messages():
    evil = '<svg onload=alert(1)>'
    summary = {
        "scenario": f"s{evil}", "verdict": "regression", "run_id": "r1", "baseline": f"base{evil}", "repeat": 1,
        "backend": "sim", "platform": "cpu", "variants": ["base", "cand"],
        "reasons": [f"cand: regression: step {evil} failed <img src=x onerror=alert(2)>"],
        "cases": [{"step": f"step {evil}", "variants": {"base": {"outcome": "passed"},
                                                       "cand": {"outcome": "failed", "failure_class": "crash"}}}],
        "transitions": {"cand": {"cases": [{"transition": "regression", "step": f"step {evil}",
                                            "baseline": {"outcome": "passed"},
                                            "candidate": {"outcome": "failed", "failure_class": "crash",
                                                          "message": f"RuntimeError: {evil}</td>"}}]}},
        "orphans": [{"pid": 1, "cmdline": f"python {evil}"}], "substitutions": [f"model {evil}"],
    }
    text = markdown.render(run_summary(summary))
    assert "<svg" not in text and "<img" not in text and "</td>" not in text
    assert "&lt;svg onload=alert(1)&gt;" in text  # shown, not dropped


# --------------------------------------------------------------------------- names that become paths
def _shard_dir(tmp_path: Path, name: str, **meta) -> Path:
    d = tmp_path / name
    (d / "logs").mkdir(parents=True)
    base = {"version": 1, "scenario": "s", "repeat": 1, "baseline": "a", "backend": "sim",
            "profiles": {"a": "fixed"}, "variants": ["a"], "matrix": [["a", 0]]}
    (d / "run.json").write_text(json.dumps({**base, **meta}))
    return d


@pytest.mark.parametrize("meta, key", [
    ({"scenario": "../../../pwned"}, "scenario"),
    ({"scenario": "/tmp/pwned-absolute"}, "scenario"),
    ({"scenario": ["a", "list"]}, "scenario"),
    ({"profiles": {"../../pwned": "fixed"}, "matrix": [["../../pwned", 0]]}, "variants"),
    ({"matrix": [["a"]]}, "matrix[0]"),
], ids=["traversal", "absolute", "not_a_string", "variant_traversal", "bad_matrix"])
def test_merge_refuses_run_json_names_that_would_leave_the_results_directory(tmp_path, meta, key):
    part = _shard_dir(tmp_path / "in", "part", **meta)
    out = tmp_path / "deep" / "er" / "results"
    before = sorted(p for p in tmp_path.rglob("*"))
    line = assert_one_line_error(cli("merge", str(part), "--out", str(out)), f"{part / 'run.json'}: {key}")
    assert "internal error" not in line
    assert sorted(p for p in tmp_path.rglob("*")) == before, "merge wrote something"


# --------------------------------------------------------------------------- bounded reads
@pytest.fixture
def fifo(tmp_path) -> Path:
    path = tmp_path / "a.fifo"
    os.mkfifo(path)
    return path


def _endless(tmp_path: Path) -> Path:
    """A sparse file larger than any cap: reading it whole would exhaust memory."""
    path = tmp_path / "huge.bin"
    with open(path, "wb") as f:
        f.truncate(8 << 30)
    return path


@pytest.mark.parametrize("command", [["validate"], ["run", "--out", "OUT"]], ids=["validate", "run"])
def test_scenario_that_is_not_a_regular_file_is_refused_at_once(tmp_path, fifo, command):
    args = [a.replace("OUT", str(tmp_path / "out")) for a in command]
    for path, what in [(fifo, "is a FIFO (named pipe), expected a YAML file"),
                       ("/dev/zero", "is a character device, expected a YAML file")]:
        start = time.monotonic()
        assert_one_line_error(cli(*args, str(path), timeout=30), f"error: {path}: {what}")
        assert time.monotonic() - start < 30
    assert_one_line_error(cli(*args, str(_endless(tmp_path))), "larger than the 4194304")
    assert not (tmp_path / "out").exists()


def test_diff_and_classify_refuse_fifos_devices_and_endless_files(tmp_path, fifo):
    good = ROOT / "tests" / "data" / "junit" / "harness_with_fix.xml"
    assert_one_line_error(cli("diff", str(fifo), str(good), timeout=30), f"{fifo}: is a FIFO")
    assert_one_line_error(cli("diff", str(good), "/dev/zero", timeout=30), "/dev/zero: is a character device")
    assert_one_line_error(cli("diff", str(good), str(_endless(tmp_path)), timeout=30), "larger than")
    for path in (fifo, "/dev/zero", "/dev/urandom"):
        assert_one_line_error(cli("classify", str(path), timeout=30), f"{path}: is a")
    # a long log is classified by its end, not refused
    log = tmp_path / "long.log"
    log.write_text("x" * (3 << 20) + "\nValueError: Free memory on device cuda:0 (1.0/64.0 GiB) on startup is "
                   "less than desired GPU memory utilization (0.9, 57.6 GiB).\n")
    proc = cli("classify", str(log))
    assert proc.returncode == 0 and proc.stdout.strip() == "vram_construction", proc.stderr


def test_trend_refuses_a_history_that_is_not_a_regular_file(tmp_path, fifo):
    env_proc = cli("trend", "--out", str(tmp_path), timeout=30, env={"HARNESS_HISTORY": str(fifo)})
    assert_one_line_error(env_proc, f"{fifo}: is a FIFO")


# --------------------------------------------------------------------------- trend on odd history
GOOD = {"version": 1, "scenario": "s", "variant": "a", "night": "2026-01-01", "run_id": "r1", "verdict": "fix confirmed",
        "steps": {"x": {"runs": 2, "failed": 1, "class": "vram_construction"}}}
ODD = [({"version": "2"}, "version"), ({"runs": "x"}, "runs"), ({"scenario": ["s"]}, "scenario"),
       ({"variant": {"a": 1}}, "variant"), ({"night": 20260101}, "night"), ({"steps": 3}, "steps"),
       ({"steps": {"x": 5}}, "steps.x"), ({"steps": {"x": {"runs": "2"}}}, "steps.x.runs"),
       ({"steps": {"x": {"runs": 1, "failed": -1}}}, "steps.x.failed"), ({"release_latency_s": 3}, "release_latency_s"),
       ({"release_latency_s": {"median": "slow"}}, "release_latency_s.median"), ({"skipped": True}, "skipped"),
       ({"run_id": ["r"]}, "run_id"), ({"verdict": {"v": 1}}, "verdict")]


def test_trend_skips_each_malformed_record_with_a_warning_naming_the_key(tmp_path):
    path = tmp_path / "history.jsonl"
    lines = [json.dumps(GOOD)] + [json.dumps({**GOOD, **odd}) for odd, _ in ODD] + ["[1, 2]", "7", "null"]
    path.write_text("\n".join(lines) + "\n")
    records, warnings = history.load(path)
    assert records == [GOOD]
    for lineno, (_, key) in enumerate(ODD, 2):
        assert any(w.startswith(f"{path}:{lineno}: skipped a malformed record ({key}:") for w in warnings), (key, warnings)
    assert len(warnings) == len(ODD) + 3
    proc = cli("trend", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    assert proc.stderr.count("warning: ") == len(ODD) + 3
    assert "50% 1/2" in proc.stdout


def test_names_in_history_and_junit_reach_the_terminal_as_text_not_markup_or_escapes(tmp_path):
    """rich markup ("[/b]") and an ANSI escape in names read from files: shown literally."""
    nasty = {"scenario": "[/]", "variant": "\x1b[31mred[/b]", "vllm_version": "[bold", "verdict": "[/x]",
             "steps": {"[/]": {"runs": 1, "failed": 1, "class": "[/]"}}}
    (tmp_path / "history.jsonl").write_text("".join(
        json.dumps({**GOOD, **nasty, "night": night}) + "\n" for night in ("2026-01-01", "2026-01-02")))
    proc = cli("trend", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stdout and "\\x1b[31mred[/b]" in proc.stdout and "[/x]" in proc.stdout
    junit = tmp_path / "a.xml"
    junit.write_text('<testsuite name="s"><testcase classname="c" name="\\x1b[2J wiped"/></testsuite>')
    proc = cli("diff", str(junit), str(junit))
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stdout and "\\x1b[2J wiped" in proc.stdout


# --------------------------------------------------------------------------- option values
@pytest.mark.parametrize("value", ["0", "-3", "x", "10001"])
def test_repeat_out_of_range_is_refused_naming_the_option_before_a_run_directory_exists(tmp_path, value):
    out = tmp_path / "out"
    line = assert_one_line_error(cli("scenarios/sampler_mi250.yaml", "--repeat", value, "--out", str(out)),
                                 "argument --repeat:")
    assert "run.json" not in line
    assert not out.exists()


def test_a_model_path_given_on_the_command_line_is_checked_before_a_run_directory_exists(tmp_path):
    out = tmp_path / "out"
    assert_one_line_error(cli("scenarios/sampler_mi250.yaml", "--model", "./no/such/model", "--out", str(out)),
                          "error: --model: model path './no/such/model' does not exist")
    assert not out.exists()


def test_usage_errors_are_one_line():
    assert_one_line_error(cli("validate"), "error: run.py validate: the following arguments are required")
    assert_one_line_error(cli("trend", "--nights", "0"), "argument --nights: 0 is out of range")
    assert re.search(r"unrecognized arguments: --no-such-option", cli("diff", "a", "b", "--no-such-option").stderr)
