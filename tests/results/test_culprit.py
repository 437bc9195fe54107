"""The culprit of a VRAM construction failure, in every report."""

from __future__ import annotations

import json

from harness import cli
from harness.results import culprit
from harness.results.culprit import Build
from harness.results.junitread import read_cases
from tests.fixtures import GIB, read_by_name
from tests.sim_scenarios import bare_vs_fixed


def build(name, before, after=None, teardown=(), vram=False, settle=()):
    readings = [*settle, ("before_construct", before)]
    if after is not None:
        readings += [("after_construct", after), ("after_workload", after)]
    readings += [(f"after_{a}", b) for a, b in teardown]
    return Build(name, tuple(readings), vram)


def test_the_culprit_is_the_earliest_build_still_holding_memory():
    builds = [
        build("ok", 1 * GIB, 50 * GIB, [("del_llm", 50 * GIB), ("cleanup_dist_env", 1 * GIB)]),  # gave it back
        build("leaky", 1 * GIB, 50 * GIB, [("del_llm", 50 * GIB), ("cleanup_dist_env", 30 * GIB)]),
        build("victim", 30 * GIB, vram=True),
    ]
    found = culprit.find(builds, 2)
    assert found.step == "leaky"
    assert found.held_bytes_after == {"del_llm": 49 * GIB, "cleanup_dist_env": 29 * GIB}
    assert found.freed_after is None


def test_freed_after_names_the_first_later_reading_where_it_was_back():
    builds = [
        build("leaky", 1 * GIB, 50 * GIB, [("del_llm", 50 * GIB)]),
        build("victim", 50 * GIB, vram=True, teardown=[("del_llm", 50 * GIB)]),
        build("next", 1 * GIB, 50 * GIB, [("del_llm", 1 * GIB)]),  # the lazy release came through meanwhile
    ]
    found = culprit.find(builds, 1)
    assert found.step == "leaky" and found.freed_after == {"step": "next", "at": "before_construct"}
    assert "free only at next's before_construct" in found.describe()


def test_memory_back_by_the_victims_settle_wait_clears_that_build():
    builds = [build("slow", 1 * GIB, 50 * GIB, [("del_llm", 50 * GIB)]),
              build("victim", 20 * GIB, vram=True, settle=[("after_wait_memory", 1 * GIB)])]
    assert culprit.find(builds, 1) is None  # back by the failing construction: someone else holds it


def test_noise_within_the_tolerance_is_free():
    builds = [build("a", 1 * GIB, 50 * GIB, [("cleanup_dist_env", 1 * GIB + (32 << 20))]),
              build("victim", 40 * GIB, vram=True)]
    assert culprit.find(builds, 1) is None


def test_a_step_that_never_built_an_engine_is_no_culprit():
    builds = [build("never", 40 * GIB), build("victim", 40 * GIB, vram=True)]
    assert culprit.find(builds, 1) is None


def _run(tmp_path, repeat="1"):
    path = tmp_path / "s.yaml"
    path.write_text(bare_vs_fixed("cul", release_delay_s=0.1))
    out = tmp_path / "out"
    code = cli.main([str(path), "--out", str(out), "--repeat", repeat, "--no-early-stop"])
    (rd,) = (out / "cul").iterdir()
    return code, rd


def test_every_report_names_the_culprit(tmp_path, capsys):
    code, rd = _run(tmp_path)
    console = capsys.readouterr().out
    assert "FAIL without_fix r0 seeded" in console and "culprit: greedy (held" in console
    # JUnit: the failing case's properties
    (seeded,) = [c for c in read_cases(rd / "without_fix.xml") if c.name == "seeded"]
    assert seeded.properties["culprit_step"] == "greedy"
    assert int(seeded.properties["culprit_held_after_gc_collect_bytes"]) > 50 * GIB  # bare keeps the frozen engine
    # summary.json: the failure entry
    summary = json.loads((rd / "summary.json").read_text())
    cell = next(r for r in summary["cases"] if r["step"] == "seeded")["variants"]["without_fix"]
    assert cell["culprit"]["step"] == "greedy"
    assert set(cell["culprit"]["held_bytes_after"]) == {"del_llm", "gc_collect"}
    assert "culprit" not in next(r for r in summary["cases"] if r["step"] == "greedy")["variants"]["without_fix"]
    # report.md and report.html
    assert "culprit: greedy (held" in (rd / "report.md").read_text()
    html = (rd / "report.html").read_text()
    assert '<div class="culprit">culprit: greedy (held' in html and 'table class="transitions"' in html


def test_with_repeats_the_culprit_is_found_within_the_same_repeat(tmp_path):
    code, rd = _run(tmp_path, repeat="2")
    found = culprit.from_cases(read_cases(rd / "without_fix.xml"), repeats=2)
    assert {(k[1], c.step) for k, c in found.items()} == {("seeded[0]", "greedy[0]"), ("third[0]", "greedy[0]"),
                                                          ("seeded[1]", "greedy[1]"), ("third[1]", "greedy[1]")}
    summary = json.loads((rd / "summary.json").read_text())
    assert next(r for r in summary["cases"] if r["step"] == "third")["variants"]["without_fix"]["culprit"]["step"] == "greedy"


def test_diff_shows_whose_residue_changed(tmp_path, capsys):
    code, rd = _run(tmp_path)
    capsys.readouterr()
    cli.main(["diff", str(rd / "without_fix.xml"), str(rd / "with_fix.xml")])
    out = capsys.readouterr().out
    assert "residue changed" in out and "cul::greedy: 57.60 GiB -> 0.00 GiB" in out
    cli.main(["diff", str(rd / "without_fix.xml"), str(rd / "with_fix.xml"), "--json"])
    changes = json.loads(capsys.readouterr().out)["residue"]
    assert changes[0]["case"] == "cul::greedy" and changes[0]["candidate_bytes"] == 0


def test_one_junit_file_with_every_variant_keeps_their_sequences_apart():
    from harness.results.junitread import Case
    from harness.model import FailureClass, Outcome

    def case(variant, name, props, failed=False):
        props = {"variant": variant, "repeat": "0", **{f"mem_{k}_bytes": str(v) for k, v in props.items()}}
        if failed:
            return Case("pytest", f"x.{variant}", name, Outcome.FAILED, FailureClass.VRAM_CONSTRUCTION, properties=props)
        return Case("pytest", f"x.{variant}", name, Outcome.PASSED, properties=props)

    leak = {"before_construct": GIB, "after_construct": 50 * GIB, "after_del_llm": 50 * GIB}
    clean = {"before_construct": GIB, "after_construct": 50 * GIB, "after_del_llm": GIB}
    cases = [case("a", "s1", leak), case("a", "s2", {"before_construct": 50 * GIB}, failed=True),
             case("b", "s1", clean), case("b", "s2", {"before_construct": 50 * GIB}, failed=True)]
    found = culprit.from_cases(cases)
    assert found[("x.a", "s2")].step == "s1"
    assert ("x.b", "s2") not in found  # b's s1 gave its memory back: not b's culprit, and a's is not b's


# --------------------------------------------------------------------------- pytest suites
def _hf_then_vllm_events():
    """Upstream's test_logprobs shape: an HfRunner model (no device memory), then a VllmRunner whose
    engine the legacy teardown leaves held; the next test's engine fails for memory."""
    def mem(step, index, b, label, used):
        return {"event": "memory", "step": step, "index": index, "build": b, "label": label, "used_bytes": used,
                "total_bytes": 64 * GIB}
    a, v = "test_logprobs[opt]", "test_next"
    evs = [{"event": "step_start", "step": a, "index": 0}]
    evs += [mem(a, 0, 0, lab, GIB) for lab in ("before_construct", "after_construct", "after_del_llm")]
    evs += [mem(a, 0, 1, "before_construct", GIB), mem(a, 0, 1, "after_construct", 58 * GIB),
            mem(a, 0, 1, "after_del_llm", 58 * GIB), mem(a, 0, 1, "after_cleanup_dist_env", 58 * GIB)]
    evs += [{"event": "step_end", "step": a, "index": 0, "outcome": "passed"},
            {"event": "step_start", "step": v, "index": 1}, mem(v, 1, 0, "before_construct", 58 * GIB),
            {"event": "step_end", "step": v, "index": 1, "outcome": "failed", "phase": "construct",
             "error_type": "ValueError", "message": "Free memory on device cuda:0 (5.90/64.00 GiB) on startup is "
             "less than desired GPU memory utilization (0.9, 57.60 GiB)."}]
    return evs


def test_a_pytest_suites_culprit_is_on_the_console_and_in_junit_as_in_summary_json(tmp_path):
    import io

    from rich.console import Console

    from harness.model import VariantResult
    from harness.report import console
    from harness.results import events as events_mod, junit

    evs = _hf_then_vllm_events()
    buf = io.StringIO()
    with console.Progress(2, console=Console(file=buf, force_terminal=False, width=400)) as progress:
        for ev in evs:
            progress("legacy", 0, ev)
    assert "— culprit: test_logprobs[opt] (held 57.00 GiB after del_llm" in buf.getvalue()

    planned = [{"name": "test_logprobs[opt]", "index": 0, "classname": "tests.samplers.test_logprobs"},
               {"name": "test_next", "index": 1, "classname": "tests.samplers.test_logprobs"}]
    timed = [{"t": float(i), "variant": "legacy", **ev} for i, ev in enumerate(evs)]
    _, steps = events_mod.collect(timed, planned, log=tmp_path / "log", stopped=None, exit_description="")
    path = tmp_path / "legacy.xml"
    junit.write_variant(path, "up", [VariantResult("legacy", "legacy", steps)], 1, {"variant": "legacy"})
    cases = read_by_name(path)
    assert cases["test_next"].properties.get("culprit_step") == "test_logprobs[opt]"
    assert culprit.from_cases(cases.values())[cases["test_next"].key].step == "test_logprobs[opt]"  # summary.json's
