"""Reading JUnit: the harness's own files, plain pytest output, other runners, and broken input."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
from junitparser import Error, Failure, JUnitXml, Properties, Property, Skipped, TestCase, TestSuite

import harness.results
from harness.errors import InputError
from harness.results.junitread import Case, read_cases
from harness.model import FailureClass, Outcome
from tests.fixtures import DATA

JUNIT = DATA / "junit"
VRAM_LINE = ("ValueError: Free memory on device cuda:0 (7.41/79.18 GiB) on startup is less than desired "
             "GPU memory utilization (0.9, 71.26 GiB).")


def write_harness_file(path: Path, variant: str, steps: dict[str, str]) -> Path:
    """A file shaped like junit.py's: steps maps name -> failure class ("none" passed, "skip")."""
    suite = TestSuite(variant)
    suite.add_property("scenario", "demo")
    cases = []
    for name, cls in steps.items():
        case = TestCase(name, classname="demo", time=1.5)
        props = Properties()
        props.add_property(Property("failure_class", "none" if cls == "skip" else cls))
        props.add_property(Property("construct_s", "0.250000"))
        case.append(props)
        if cls == "skip":
            case.result = [Skipped("never ran")]
        elif cls != "none":
            failure = Failure(f"Error: {name} failed", cls)
            failure.text = "Traceback (most recent call last):\n..."
            case.result = [failure]
        cases.append(case)
    suite.add_testcases(cases)
    xml = JUnitXml()
    xml.add_testsuite(suite)
    xml.write(str(path))
    return path


def by_name(cases: list[Case]) -> dict[str, Case]:
    return {c.name: c for c in cases}


def test_harness_file_written_with_junitparser(tmp_path):
    path = write_harness_file(tmp_path / "v.xml", "no_fix",
                              {"a": "none", "b": "vram_construction", "c": "teardown_error", "d": "skip"})
    cases = by_name(read_cases(path))
    assert list(cases) == ["a", "b", "c", "d"]
    assert cases["a"].outcome is Outcome.PASSED and cases["a"].failure_class is FailureClass.NONE
    assert cases["b"].outcome is Outcome.FAILED and cases["b"].failure_class is FailureClass.VRAM_CONSTRUCTION
    assert cases["c"].failure_class is FailureClass.TEARDOWN_ERROR  # the property wins, no classifier
    assert cases["d"].outcome is Outcome.SKIPPED and cases["d"].failure_class is FailureClass.NONE
    assert cases["b"].key == ("demo", "b")
    assert cases["b"].suite == "no_fix"
    assert cases["b"].message == "Error: b failed"
    assert cases["b"].time == 1.5
    assert cases["b"].properties["construct_s"] == "0.250000"


def test_static_harness_file():
    cases = read_cases(JUNIT / "harness_no_fix.xml")
    assert [(c.name, c.outcome, c.failure_class) for c in cases] == [
        ("logprobs", Outcome.PASSED, FailureClass.NONE),
        ("seeded", Outcome.FAILED, FailureClass.VRAM_CONSTRUCTION),
        ("penalties", Outcome.FAILED, FailureClass.VRAM_CONSTRUCTION),
    ]
    assert cases[1].properties["mem_before_construct_bytes"] == "248301584384"
    assert cases[1].text.startswith("Traceback")


def test_plain_pytest_junitxml_is_classified():
    cases = by_name(read_cases(JUNIT / "pytest_samplers.xml"))
    assert len(cases) == 9
    assert all(c.suite == "pytest" and c.properties == {} for c in cases.values())
    vram = cases["test_one_token_bad_word"]
    assert vram.classname == "tests.samplers.test_no_bad_words"
    assert vram.outcome is Outcome.FAILED
    assert vram.failure_class is FailureClass.VRAM_CONSTRUCTION
    assert vram.message.startswith("ValueError: Free memory on device cuda:0 (7.41/79.18 GiB)")
    assert vram.time == pytest.approx(3.482)
    # vLLM v1 raises the ValueError in the engine-core process: the parent only says "initialization
    # failed", and the cause is in system-err, which the classifier reads too.
    assert cases["test_two_token_bad_word"].failure_class is FailureClass.VRAM_CONSTRUCTION
    seeded = cases["test_random_sample_with_seed[bfloat16-facebook/opt-125m]"]
    assert seeded.failure_class is FailureClass.ASSERTION
    skipped = cases["test_beam_search_passes_multimodal_data[2-64-half-Qwen/Qwen2-Audio-7B-Instruct]"]
    assert skipped.outcome is Outcome.SKIPPED and skipped.failure_class is FailureClass.NONE
    assert skipped.message == "multimodal beam search needs 2 GPUs"
    error = cases["test_uniform_target_distribution[cuda:0-1000-0.05-2-8]"]
    assert error.outcome is Outcome.FAILED  # <error> counts as failed
    assert error.failure_class is not FailureClass.NONE
    assert cases["test_min_p[0.1]"].outcome is Outcome.PASSED


def test_classifier_gets_message_text_and_system_err(tmp_path, monkeypatch):
    seen = []
    stub = types.ModuleType("harness.results.classify")
    stub.classify_text = lambda text: seen.append(text) or FailureClass.CRASH
    monkeypatch.setitem(sys.modules, "harness.results.classify", stub)
    monkeypatch.setattr(harness.results, "classify", stub, raising=False)
    case = TestCase("t", classname="m")
    failure = Failure("the message")
    failure.text = "the traceback"
    case.result = [failure]
    case.system_err = "the log"
    suite = TestSuite("s")
    suite.add_testcase(case)
    suite.write(str(tmp_path / "x.xml"))
    assert read_cases(tmp_path / "x.xml")[0].failure_class is FailureClass.CRASH
    assert all(part in seen[0] for part in ("the message", "the traceback", "the log"))


def test_bare_testsuite_with_nested_suites_and_odd_attributes():
    cases = read_cases(JUNIT / "nested_suites.xml")
    assert [(c.suite, c.classname, c.name) for c in cases] == [
        ("tests/samplers/test_min_p.py", "test_min_p", "test_min_p[0.1]"),
        ("tests/samplers/test_min_p.py", "test_min_p", "test_min_p[0.5]"),
        ("buildkite :rocm: samplers", "test_top_k", "test_top_k"),
    ]
    assert cases[0].time == 0.0  # time="n/a"
    assert cases[0].properties == {"retry": "1", "agent": "mi300-ci-07"}  # a value given as text
    assert cases[1].time == 1204.5  # "1,204.5"
    assert cases[1].failure_class is FailureClass.ASSERTION


def test_error_element_counts_as_failed(tmp_path):
    case = TestCase("t", classname="m")
    case.result = [Error("failed on setup with \"AssertionError: x\"")]
    suite = TestSuite("s")
    suite.add_testcase(case)
    suite.write(str(tmp_path / "x.xml"))
    (only,) = read_cases(tmp_path / "x.xml")
    assert only.outcome is Outcome.FAILED and only.failed


def test_duplicate_keys_are_kept_apart():
    cases = read_cases(JUNIT / "duplicates.xml")
    assert [c.name for c in cases] == ["test_get_prompt_logprobs", "test_get_prompt_logprobs#2",
                                       "test_max_logprobs"]
    assert len({c.key for c in cases}) == 3


def test_empty_suite_has_no_cases(tmp_path):
    (tmp_path / "x.xml").write_text('<testsuites><testsuite name="s" tests="0"/></testsuites>')
    assert read_cases(tmp_path / "x.xml") == []


@pytest.mark.parametrize("name, words", [
    ("missing.xml", "no such file"),
    ("empty.xml", "empty file"),
    ("broken.xml", "not XML: unclosed token: line 4"),
    ("not_junit.xml", "not JUnit XML: root element is <project>"),
])
def test_bad_files_are_one_line_input_errors(name, words):
    with pytest.raises(InputError) as info:
        read_cases(JUNIT / name)
    message = str(info.value)
    assert message.startswith(str(JUNIT / name) + ": ")
    assert words in message
    assert "\n" not in message


def test_directory_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="is a directory"):
        read_cases(tmp_path)


def test_whitespace_only_is_empty(tmp_path):
    (tmp_path / "x.xml").write_text("  \n\n")
    with pytest.raises(InputError, match="empty file"):
        read_cases(tmp_path / "x.xml")


def test_binary_garbage_is_an_input_error(tmp_path):
    (tmp_path / "x.xml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    with pytest.raises(InputError, match="not XML"):
        read_cases(tmp_path / "x.xml")


def test_cases_are_hashable_and_frozen():
    (case,) = [c for c in read_cases(JUNIT / "harness_with_fix.xml") if c.name == "seeded"]
    assert case in {case}
    with pytest.raises(AttributeError):
        case.name = "other"  # type: ignore[misc]
