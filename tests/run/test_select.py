"""--step and -k on run.py and bisect: which steps run."""

from __future__ import annotations

import argparse
import json

import pytest

from harness import cli
from harness.bisect import bisector
from harness.bisect import command as bisect_command
from harness.errors import InputError
from harness.results.junitread import read_cases
from harness.run import select
from tests.sim_scenarios import bare_vs_fixed

NAMES = ["test_greedy", "test_seeded", "test_logprobs", "test_stop_strings"]


@pytest.mark.parametrize("expr, chosen", [
    ("greedy", ["test_greedy"]),
    ("GREEDY or stop", ["test_greedy", "test_stop_strings"]),
    ("not (greedy or stop)", ["test_seeded", "test_logprobs"]),
    ("test and not seed", ["test_greedy", "test_logprobs", "test_stop_strings"]),
    ("not not logprobs", ["test_logprobs"]),
])
def test_k_expressions_match_as_pytest_does(expr, chosen):
    assert select.steps(NAMES, None, expr) == chosen


@pytest.mark.parametrize("expr", ["a or", "(a", "and", "a b", "a )"])
def test_a_broken_expression_is_an_input_error(expr):
    with pytest.raises(InputError, match="-k"):
        select.steps(NAMES, None, expr)


def test_step_names_keep_scenario_order_and_typos_get_the_nearest_name():
    assert select.steps(NAMES, ["test_logprobs", "test_greedy"]) == ["test_greedy", "test_logprobs"]
    assert select.steps(NAMES) is None
    with pytest.raises(InputError, match="did you mean 'test_logprobs'"):
        select.steps(NAMES, ["test_logprob"])
    with pytest.raises(InputError, match="selects no step"):
        select.steps(NAMES, ["test_greedy"], "seeded")


def _scenario(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(bare_vs_fixed("sel", release_delay_s=0.2))
    return path


def _run_dir(out):
    (rd,) = (out / "sel").iterdir()
    return rd


def test_run_with_steps_runs_only_those_in_order(tmp_path):
    out = tmp_path / "out"
    cli.main([str(_scenario(tmp_path)), "--out", str(out), "--step", "third", "--step", "greedy"])
    rd = _run_dir(out)
    cases = read_cases(rd / "without_fix.xml")
    assert [c.name for c in cases] == ["greedy", "third"]
    assert cases[1].failure_class.value == "vram_construction"  # greedy's engine still holds the memory
    assert json.loads((rd / "run.json").read_text())["steps_selected"] == ["greedy", "third"]


def test_run_with_k_deselects(tmp_path):
    out = tmp_path / "out"
    cli.main([str(_scenario(tmp_path)), "--out", str(out), "-k", "not (seeded or third)"])
    assert [c.name for c in read_cases(_run_dir(out) / "with_fix.xml")] == ["greedy"]


def test_unknown_step_exits_2_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main([str(_scenario(tmp_path)), "--out", str(out), "--step", "thrid"]) == 2
    assert "did you mean 'third'" in capsys.readouterr().err and not out.exists()


def test_bisect_step_judges_only_the_selected_steps(tmp_path, capsys):
    path = str(_scenario(tmp_path))
    out = str(tmp_path / "out")
    assert cli.main(["bisect-step", path, "--out", out, "--step", "greedy"]) == 0
    assert cli.main(["bisect-step", path, "--out", out, "-k", "greedy or third"]) == 1
    assert "step 'third' failed with vram_construction" in capsys.readouterr().out


def test_bisect_resume_command_keeps_the_selection(tmp_path):
    parser = argparse.ArgumentParser()
    bisect_command.add_arguments(parser)
    args = parser.parse_args([str(_scenario(tmp_path)), "--versions", "1.0,2.0", "--step", "third", "-k", "th"])

    class Source:
        def resume_args(self, old, new, old_flag, new_flag):
            return [old_flag, old, new_flag, new]

    cmd = bisect_command.resume_command(args, Source(), bisector.REGRESSION, "1.0", "2.0")
    assert "--step third" in cmd and "-k th" in cmd
