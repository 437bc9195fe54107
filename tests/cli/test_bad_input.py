"""Bad input: one clear line on stderr, exit 2, nothing run, nothing written; YAML loaded safely.

tests/data/bad_scenarios/ holds one malformed scenario per case, named after the case. Each is
given to `run.py validate FILE` and to `run.py FILE --out DIR` in a real subprocess: both must exit
2 with exactly one line naming the file and the key path, no traceback, and no results directory.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from harness.scenario import yamlsafe
from harness.errors import ScenarioError
from tests.fixtures import DATA, ROOT, assert_one_line_error, cli

CORPUS = DATA / "bad_scenarios"

# case (file name without .yaml) -> fragments the one error line must contain after "error: FILE: ".
# The first fragment starts the message: the key path (or the line number for YAML-level errors).
EXPECTED: dict[str, tuple[str, ...]] = {
    # YAML itself
    "yaml_syntax_unclosed_flow": ("line 10, column 1: YAML syntax error:", "expected ',' or '}'"),
    "yaml_syntax_bad_indentation": ("line 11, column 13: YAML syntax error:", "mapping values are not allowed"),
    "yaml_tab_indentation": ("line 7, column 1: YAML syntax error:", "'\\t'", "indent YAML with spaces"),
    "yaml_multiple_documents": ("line 12, column 1: YAML syntax error:", "single document"),
    "yaml_document_is_list": ("expected a mapping of scenario keys", "got a list"),
    "yaml_document_is_scalar": ("expected a mapping of scenario keys", "got a string"),
    "yaml_only_comments": ("file is empty",),
    "yaml_python_object_tag": ("line 6, column 14: YAML tag '!!python/object/apply:os.system' is not allowed",
                               "safe loader"),
    "yaml_alias_bomb": ("YAML expands to", "through aliases", "refused"),
    "yaml_recursive_alias": ("steps[0]: expected a mapping, got a list",),
    "yaml_deep_nesting": ("YAML nests too deeply",),
    "yaml_duplicate_top_key": ("steps: line 12: duplicate key 'steps' (first given at line 9)",),
    "yaml_non_string_key": ("keys must be strings, got 1",),
    "empty_file": ("file is empty",),
    "not_utf8": ("line 3: not UTF-8 (byte 0xe9)",),
    "binary_garbage": ("line 1: not UTF-8",),
    "directory_instead_of_file": ("is a directory, expected a YAML file",),
    "yaml_raw_escape_byte": ("line 4, column 15: character U+001B is not allowed in YAML",),
    "yaml_raw_nul_byte": ("line 3, column 10: character U+0000 is not allowed in YAML",),
    # names that become paths
    "scenario_name_traversal": ("name: the scenario name '../../escaped' would leave the results directory",),
    "scenario_name_absolute": ("name: the scenario name '/tmp/harness-escaped' would leave the results directory",),
    "scenario_name_nul": ("name: the scenario name contains a NUL character",),
    "scenario_name_control_character": ("name: the scenario name 'two\\nlines' contains a control character",),
    "variant_name_too_long": ("variants.vxxx", "the variant name is 300 characters long", "limit of 255 bytes"),
    # top level
    "version_newer": ("version: version 2 is newer than this release understands", "upgrade"),
    "version_missing": ("version: required key is missing",),
    "version_wrong_type": ("version: expected an integer, got a string",),
    "unknown_top_key": ("descripton: unknown key; did you mean 'description'?",),
    "missing_steps": ("steps: required key is missing",),
    "pytest_and_steps": ("pytest: a scenario has either 'steps:'", "not both"),
    "pytest_args_not_a_list": ("pytest.args: expected a list of arguments",),
    "pytest_rootdir_missing": ("pytest.rootdir: required key is missing",),
    "pytest_unknown_key": ("pytest.arg: unknown key; did you mean 'args'?",),
    "pytest_on_sim_backend": ("backend: a pytest suite runs vLLM's own tests",),
    "missing_variants": ("variants: required key is missing",),
    "empty_steps": ("steps: at least one step is required",),
    "empty_variants": ("variants: at least one variant is required",),
    "steps_is_mapping": ("steps: expected a list of steps, got a mapping",),
    "platform_unknown": ("platform: 'rcom' is not valid; did you mean 'rocm'?",),
    "backend_unknown": ("backend: 'simulated' is not valid; did you mean 'sim'?",),
    "baseline_unknown": ("baseline: 'without_fixx' is not valid; did you mean 'without_fix'?",),
    "repeat_zero": ("repeat: 0 is out of range",),
    "repeat_negative": ("repeat: -1 is out of range",),
    "repeat_absurd": ("repeat: 1000000000 is out of range",),
    "repeat_boolean": ("repeat: expected an integer, got a boolean",),
    # timeouts
    "timeouts_unknown_key": ("timeouts.steps: unknown key; did you mean 'step'?",),
    "timeouts_step_zero": ("timeouts.step: 0 is out of range (must be > 0",),
    "timeouts_stop_grace_negative": ("timeouts.stop_grace: -1 is out of range",),
    "timeouts_not_a_number": ("timeouts.step: expected a number, got a string",),
    "step_timeout_negative": ("steps[0].timeout_s: -1 is out of range",),
    "step_timeout_nan": ("steps[0].timeout_s: nan is out of range",),
    # simulated device
    "sim_unknown_key": ("sim.release_delay: unknown key; did you mean 'release_delay_s'?",),
    "sim_negative_delay": ("sim.release_delay_s: -2 is out of range",),
    # variants
    "variant_unknown_key": ("variants.with_fix.profil: unknown key; did you mean 'profile'?",),
    "variant_missing_profile": ("variants.with_fix.profile: required key is missing",),
    "variant_duplicate_name": ("variants.with_fix: line 8: duplicate key 'with_fix' (first given at line 7)",),
    "variant_bad_name": ("variants.with/fix: a variant name uses letters, digits",),
    "variant_is_list": ("variants.with_fix: expected a mapping, got a list",),
    "variant_python_missing": ("variants.with_fix.python: interpreter '/nonexistent/venv/bin/python' does not exist",),
    "variant_python_not_executable": ("variants.with_fix.python: interpreter "
                                      "'tests/data/bad_scenarios/variant_python_not_executable.yaml' is not executable",),
    "variant_python_directory": ("variants.with_fix.python: interpreter 'tests/data' is a directory",),
    "variant_env_nul": ("variants.with_fix.env.VLLM_X: the value contains a NUL character",),
    "variant_engine_model_missing": ("variants.with_fix.engine.model: model path './models/no-such-variant-model' "
                                     "does not exist",),
    "variant_env_not_scalar": ("variants.with_fix.env.VLLM_X: expected a string or number, got a list",),
    "profile_unknown": ("variants.with_fix.profile: 'fixd' is not valid; did you mean 'fixed'?",),
    # injected faults
    "inject_unknown_kind": ("variants.with_fix.inject.hangs: unknown key; did you mean 'hang'?",),
    "inject_unknown_param": ("variants.with_fix.inject.hang.phse: unknown key; did you mean 'phase'?",),
    "inject_bad_phase": ("variants.with_fix.inject.crash.phase: 'startup' is not valid",),
    "inject_bad_signal": ("variants.with_fix.inject.crash.signal: 'SIGKIL' is not valid; did you mean 'SIGKILL'?",),
    "inject_missing_step": ("variants.with_fix.inject.hang.step: required key is missing",),
    "inject_unknown_step": ("variants.with_fix.inject.crash.step: 's3' is not valid; did you mean 's2'?",),
    "inject_slow_release_unknown_step": ("variants.with_fix.inject.lazy_release.step: 'greedyy' is not valid; "
                                         "did you mean 'greedy'?",),
    # teardown profiles and actions
    "teardown_unknown_action": ("teardown_profiles.mine.after[0]: 'gc_colect' is not valid; did you mean 'gc_collect'?",),
    "teardown_unknown_action_param": ("teardown_profiles.mine.after[0].wait_memory.timeout: unknown key; "
                                      "did you mean 'timeout_s'?",),
    "teardown_missing_action_param": ("teardown_profiles.mine.after[0].sleep.seconds: required key is missing",),
    "teardown_unknown_profile_key": ("teardown_profiles.mine.afterr: unknown key; did you mean 'after'?",),
    "teardown_profile_shadows_builtin": ("teardown_profiles.fixed: 'fixed' is a built-in profile",),
    "teardown_wait_negative_timeout": ("teardown_profiles.mine.after[0].wait_memory.timeout_s: -5 is out of range",),
    "call_target_not_importable": ("teardown_profiles.mine.after[0].call.target: cannot import module "
                                   "'no_such_module_for_harness_tests': not found",),
    "call_target_not_module_function": ("teardown_profiles.mine.after[0].call.target: 'just_a_module' is not of "
                                        "the form 'module:function'",),
    # steps, engines, workloads
    "step_unknown_key": ("steps[0].timeout: unknown key; did you mean 'timeout_s'?",),
    "step_missing_name": ("steps[0].name: required key is missing",),
    "step_duplicate_name": ("steps[1].name: duplicate step name 's1'",),
    "step_name_not_string": ("steps[0].name: expected a string, got a list",),
    "step_is_string": ("steps[0]: expected a mapping, got a string",),
    "engine_gpu_util_zero": ("steps[0].engine.gpu_memory_utilization: 0 is out of range (must be > 0 and <= 1)",),
    "engine_gpu_util_above_one": ("steps[0].engine.gpu_memory_utilization: 1.5 is out of range",),
    "defaults_gpu_util_string": ("defaults.gpu_memory_utilization: expected a number, got a string",),
    "model_path_missing": ("steps[0].engine.model: model path './models/no-such-model' does not exist",),
    "workload_unknown_key": ("steps[0].workload.run: unknown key; did you mean 'runs'?",),
    "workload_missing_sampling": ("steps[0].workload.sampling: required key is missing",),
    "workload_empty_prompts": ("steps[0].workload.prompts: at least one prompt is required",),
    "sampling_unknown_key": ("steps[0].workload.sampling[0].temprature: unknown key; did you mean 'temperature'?",),
    "sampling_top_p_zero": ("steps[0].workload.sampling[0].top_p: 0 is out of range",),
    "sampling_max_tokens_string": ("steps[0].workload.sampling[0].max_tokens: expected an integer, got a string",),
    "sampling_min_above_max_tokens": ("steps[0].workload.sampling[0].min_tokens: min_tokens is larger than max_tokens",),
    "expect_unknown_check": ("steps[0].expect.identical_run: unknown key; did you mean 'identical_runs'?",),
    "expect_without_workload": ("steps[0].expect: expectations need a workload",),
}

CORPUS_FILES = sorted(CORPUS.iterdir())


# --------------------------------------------------------------------------- the corpus
def test_the_corpus_is_large_and_every_case_has_its_expectation():
    names = {p.name.removesuffix(".yaml") for p in CORPUS_FILES}
    assert len(names) >= 30
    assert names == set(EXPECTED), (names - set(EXPECTED), set(EXPECTED) - names)
    assert all(p.name.endswith(".yaml") for p in CORPUS_FILES)


@pytest.mark.parametrize("path", CORPUS_FILES, ids=[p.name.removesuffix(".yaml") for p in CORPUS_FILES])
def test_bad_scenario_is_refused_with_one_line_and_nothing_written(path, tmp_path):
    shown = os.path.relpath(path, ROOT)
    fragments = EXPECTED[path.name.removesuffix(".yaml")]
    prefix = f"error: {shown}: "

    line = assert_one_line_error(cli("validate", shown), prefix)
    assert line.startswith(prefix) and line[len(prefix):].startswith(fragments[0]), line
    for fragment in fragments[1:]:
        assert fragment in line

    out = tmp_path / "results"
    run_line = assert_one_line_error(cli(shown, "--out", str(out)), prefix)
    assert run_line == line  # the same words whichever command reads it
    assert not out.exists(), "a rejected scenario created a results directory"


def test_the_alias_bomb_is_refused_fast_and_small():
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ScenarioError, match="through aliases"):
            yamlsafe.load(CORPUS / "yaml_alias_bomb.yaml")
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 1.0
    assert peak < 16 << 20  # the expanded document would be some 10**9 strings


def test_a_bigger_alias_bomb_cannot_exhaust_memory(tmp_path):
    """10**12 nodes, in a process allowed 1 GiB of address space: refused, not killed."""
    levels = [f"l0: &l0 [{', '.join(['lol'] * 10)}]"]
    levels += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 12)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(levels) + "\nversion: 1\n")

    def limit_memory():
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    start = time.monotonic()
    assert_one_line_error(cli("validate", str(bomb), preexec_fn=limit_memory), "refused")
    assert time.monotonic() - start < 30  # interpreter start-up on a busy machine included


# --------------------------------------------------------------------------- other commands' inputs
def _other_inputs(tmp: Path) -> dict[str, tuple[list[str], str, str]]:
    """case -> (arguments, the path the message names, a fragment of the message)."""
    good = ROOT / "tests" / "data" / "junit" / "harness_with_fix.xml"
    (tmp / "empty.xml").write_bytes(b"")
    (tmp / "garbage.xml").write_text("this is not <xml")
    (tmp / "html.xml").write_text('<?xml version="1.0"?><html><body/></html>')
    (tmp / "a_directory").mkdir()
    (tmp / "empty.log").write_bytes(b"")
    no_results = tmp / "no_results"
    (no_results / "logs").mkdir(parents=True)  # a run directory that never got its run.json
    no_junit = tmp / "no_junit"
    no_junit.mkdir()
    (no_junit / "run.json").write_text(json.dumps({"version": 1, "variants": ["a"], "baseline": "a", "repeat": 1}))
    bad_json = tmp / "bad_json"
    bad_json.mkdir()
    (bad_json / "run.json").write_text("{not json")
    newer = tmp / "newer"
    newer.mkdir()
    (newer / "run.json").write_text(json.dumps({"version": 99, "variants": ["a"], "baseline": "a"}))
    broken_junit = tmp / "broken_junit"
    broken_junit.mkdir()
    (broken_junit / "run.json").write_text(json.dumps({"version": 1, "variants": ["a"], "baseline": "a"}))
    (broken_junit / "a.xml").write_text("<testsuite><testcase name=")
    missing = tmp / "missing.xml"
    t = str(tmp)
    return {
        "diff_missing_file": (["diff", str(missing), str(good)], str(missing), "no such file"),
        "diff_empty_file": (["diff", str(good), f"{t}/empty.xml"], f"{t}/empty.xml", "empty file"),
        "diff_not_xml": (["diff", f"{t}/garbage.xml", str(good)], f"{t}/garbage.xml", "not XML"),
        "diff_xml_not_junit": (["diff", str(good), f"{t}/html.xml"], f"{t}/html.xml", "not JUnit XML: root element is <html>"),
        "diff_directory": (["diff", f"{t}/a_directory", str(good)], f"{t}/a_directory", "is a directory"),
        "report_missing_directory": (["report", f"{t}/nowhere"], f"{t}/nowhere", "no such run directory"),
        "report_without_results": (["report", str(no_results)], str(no_results), "not a run directory: no run.json"),
        "report_on_a_file": (["report", str(good)], str(good), "not a run directory"),
        "report_without_junit": (["report", str(no_junit)], str(no_junit / "a.xml"), "missing JUnit file"),
        "report_run_json_not_json": (["report", str(bad_json)], str(bad_json / "run.json"), "not JSON"),
        "report_run_json_newer": (["report", str(newer)], str(newer / "run.json"), "version: unsupported 99"),
        "report_junit_not_xml": (["report", str(broken_junit)], str(broken_junit / "a.xml"), "not XML"),
        "classify_missing_file": (["classify", f"{t}/nowhere.log"], f"{t}/nowhere.log", "no such file"),
        "classify_empty_file": (["classify", f"{t}/empty.log"], f"{t}/empty.log", "empty file"),
        "classify_directory": (["classify", f"{t}/a_directory"], f"{t}/a_directory", "is a directory"),
    }


OTHER_CASES = [
    "diff_missing_file", "diff_empty_file", "diff_not_xml", "diff_xml_not_junit", "diff_directory",
    "report_missing_directory", "report_without_results", "report_on_a_file", "report_without_junit",
    "report_run_json_not_json", "report_run_json_newer", "report_junit_not_xml",
    "classify_missing_file", "classify_empty_file", "classify_directory",
]


@pytest.mark.parametrize("case", OTHER_CASES)
def test_bad_input_to_diff_report_classify(case, tmp_path):
    inputs = _other_inputs(tmp_path)
    assert set(inputs) == set(OTHER_CASES)
    args, named, fragment = inputs[case]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    line = assert_one_line_error(cli(*args), fragment)
    assert line.startswith(f"error: {named}"), line
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written


# --------------------------------------------------------------------------- --debug
@pytest.mark.parametrize("args", [
    ["--debug", "validate", "tests/data/bad_scenarios/repeat_zero.yaml"],
    ["validate", "tests/data/bad_scenarios/repeat_zero.yaml", "--debug"],
    ["tests/data/bad_scenarios/repeat_zero.yaml", "--debug"],
    ["diff", "tests/data/junit/not_junit.xml", "tests/data/junit/harness_with_fix.xml", "--debug"],
], ids=["before", "after", "run", "diff"])
def test_debug_shows_the_traceback_and_the_default_does_not(args):
    debug = cli(*args)
    assert debug.returncode == 2
    assert "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.splitlines()[-1].startswith("error: ")
    plain = cli(*[a for a in args if a != "--debug"])
    assert_one_line_error(plain, debug.stderr.splitlines()[-1].removeprefix("error: "))


# --------------------------------------------------------------------------- safety
@pytest.mark.parametrize("tag", [
    "!!python/object/apply:os.system [\"touch {marker}\"]",
    "!!python/object/new:os.system [\"touch {marker}\"]",
    "!!python/name:os.system",
    "!!python/module:os",
    "!!python/object:harness.run.runner.RunOptions {{out: {marker}}}",
])
def test_unsafe_yaml_tags_are_refused_and_never_run(tmp_path, tag):
    marker = tmp_path / "marker"
    path = tmp_path / "scenario.yaml"
    path.write_text(f"version: 1\ndescription: {tag.format(marker=marker)}\nvariants: {{a: {{profile: fixed}}}}\n"
                    "steps: [{name: s1}]\n")
    with pytest.raises(ScenarioError, match=r"line 2, column 14: YAML tag '!!python/.*' is not allowed"):
        yamlsafe.load(path)
    assert_one_line_error(cli("validate", str(path)), "is not allowed", "safe loader")
    assert not marker.exists()


HOOK = "import pathlib\npathlib.Path(__file__).with_name('{name}').write_text('imported')\n" \
       "def cleanup(ctx):\n    pathlib.Path(__file__).with_name('{name}_called').write_text('called')\n"


def test_validate_never_imports_call_hooks_or_runs_interpreters(tmp_path):
    """`call:` hooks are the user's own code, like conftest.py: they run when the action runs, in
    the worker, never when a scenario is only read. A variant's interpreter is started only to ask
    its vLLM for the engine arguments it accepts (harness/run/engineargs.py), never to run a hook."""
    (tmp_path / "top_hook.py").write_text(HOOK.format(name="TOP_IMPORTED"))
    (tmp_path / "hookpkg").mkdir()
    (tmp_path / "hookpkg" / "__init__.py").write_text(HOOK.format(name="PKG_IMPORTED"))
    (tmp_path / "hookpkg" / "mod.py").write_text(HOOK.format(name="MOD_IMPORTED"))
    fake_python = tmp_path / "fake-python"
    fake_python.write_text(f"#!/bin/sh\ntouch {tmp_path}/INTERPRETER_STARTED\nexec {sys.executable} \"$@\"\n")
    fake_python.chmod(0o755)
    scenario = tmp_path / "hooks.yaml"
    scenario.write_text(
        "version: 1\nbackend: sim\nsim: {construct_s: 0.0, release_delay_s: 0.0}\n"
        "timeouts: {step: 30, worker_start: 30, stop_grace: 2}\n"
        "defaults: {gpu_memory_utilization: 0.5}\n"
        "teardown_profiles:\n  hooked:\n    after:\n"
        "      - call: top_hook:cleanup\n      - call: hookpkg.mod:cleanup\n      - engine_core_shutdown\n"
        f"variants:\n  a: {{profile: hooked, python: {fake_python}}}\n"
        "steps:\n  - name: s1\n")
    proc = cli("validate", str(scenario))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "INTERPRETER_STARTED") == [
        "fake-python", "hookpkg", "hooks.yaml", "top_hook.py"]
    assert sorted(p.name for p in (tmp_path / "hookpkg").iterdir()) == ["__init__.py", "mod.py"]

    # running it does import and call them, in the worker started by the variant's interpreter
    proc = cli(str(scenario), "--out", str(tmp_path / "out"), timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    made = {p.name for p in tmp_path.rglob("*") if p.name.isupper() or p.name.endswith("_called")}
    assert made == {"INTERPRETER_STARTED", "TOP_IMPORTED", "TOP_IMPORTED_called", "PKG_IMPORTED",
                    "MOD_IMPORTED", "MOD_IMPORTED_called"}


def test_two_mistakes_of_the_corpus_in_one_file_are_both_said_and_nothing_else_breaks(tmp_path):
    """validate reports every mistake of a file at once, so the checks after a wrong part must cope
    with it: each corpus file's keys laid over three others' (the pytest block of one with the
    steps of another, a bad variant with a bad step...) raise ScenarioError, never anything else
    (before the pytest block's fix, such a pair ended in "internal error: KeyError: 'steps'")."""
    import yaml

    from harness.scenario import schema

    raws = {}
    for path in CORPUS_FILES:
        if path.is_file() and path.stat().st_size < 5000:
            try:
                raw = yaml.safe_load(path.read_text())
            except (yaml.YAMLError, UnicodeDecodeError):
                continue
            if isinstance(raw, dict):
                raws[path.stem] = raw
    names = sorted(raws)
    assert len(names) > 50
    for i, a in enumerate(names):
        for b in (names[(i + 1) % len(names)], names[(i + 7) % len(names)], names[(i + 31) % len(names)]):
            path = tmp_path / f"{a}__{b}.yaml"
            path.write_text(yaml.safe_dump({**raws[a], **{k: v for k, v in raws[b].items() if k != "version"}}))
            try:  # (b's keys may replace a's mistake, and b's may be one only preflight sees)
                schema.load(path)
            except ScenarioError as e:
                assert all(line.startswith(f"{path}: ") for line in e.lines()), e.lines()
