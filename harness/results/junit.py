"""Write one JUnit file per variant with junitparser (reading lives in junitread.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from junitparser import Failure, JUnitXml, Properties, Property, Skipped, TestCase, TestSuite

from harness import atomic
from harness.results import culprit, leaks
from harness.model import Outcome, StepResult, VariantResult


def case_properties(res: StepResult) -> dict[str, str]:
    props: dict[str, str] = {"failure_class": str(res.failure_class), "engines_built": str(res.engines_built())}
    if res.phase is not None:
        props["phase"] = str(res.phase)
    for phase, seconds in res.phases.items():
        props[f"{phase}_s"] = f"{seconds:.6f}"
    for sample in res.memory:
        props[f"mem_{sample.label}_bytes"] = str(sample.used_bytes)
        if len(sample.per_device) > 1:  # several devices (tensor parallel): each one's own figure
            for i, used in enumerate(sample.per_device):
                props[f"mem_{sample.label}_bytes_dev{i}"] = str(used)
    for action in res.actions:
        props[f"action_{action['name']}_s"] = f"{action['duration_s']:.6f}"
    if res.release_latency_s is not None:
        props["release_latency_s"] = f"{res.release_latency_s:.6f}"
    if res.release_after_free_s is not None:
        props["release_after_free_s"] = f"{res.release_after_free_s:.6f}"
    if res.engine_process:
        props["engine_process"] = res.engine_process
    if res.probe_disagreement:
        props["probe_disagreement_bytes"], props["probe_disagreement_at"] = map(str, res.probe_disagreement)
    if res.threshold_bytes is not None:
        props["threshold_bytes"] = str(res.threshold_bytes)
    if res.wait_s is not None:  # ★ the teardown's cost
        props["wait_s"] = f"{res.wait_s:.6f}"
    if res.live_engine_built_by:  # ★ a wait that could never end, and who built what it waited for
        props["live_engine_built_by"] = res.live_engine_built_by
    props.update(leaks.properties(res))
    for fact, count in res.log_facts.items():
        props[f"log_{fact}"] = str(count)
    for exp in res.expectations:
        props[f"expect_{exp.name}"] = "ok" if exp.ok else "failed"
    for build in res.builds:  # a pytest suite's test: every engine it built, as engine<k>_...
        props.update(build_properties(build))
    return props


def build_properties(build: dict[str, Any]) -> dict[str, str]:
    pre = f"engine{build['build']}_"
    props = {pre + k: str(build[k]) for k in ("via", "model", "torn_down_by") if build.get(k) is not None}
    for k in ("construct_s", "release_latency_s", "freed_at"):
        if build.get(k) is not None:
            props[pre + k] = f"{build[k]:.6f}"
    if build.get("error"):
        props[pre + "error"] = build["error"]
    if build.get("substitutions"):
        props[pre + "substitution"] = "; ".join(build["substitutions"])
    for label, used in build["memory"].items():
        props[f"{pre}mem_{label}_bytes"] = str(used)
    for name, seconds in build["actions"].items():
        props[f"{pre}action_{name}_s"] = f"{seconds:.6f}"
    return props


def _case(classname: str, res: StepResult, repeats: int, extra: dict[str, str] | None = None) -> TestCase:
    case = TestCase(res.case_name(repeats), classname=res.classname if res.classname is not None else classname,
                    time=round(res.duration_s, 6))
    props = Properties()
    for name, value in {**case_properties(res), **(extra or {})}.items():
        props.add_property(Property(name, value))
    case.append(props)  # <properties> first, as the JUnit schema orders them
    if res.outcome is Outcome.FAILED:
        failure = Failure(res.message[:2000], str(res.failure_class))
        failure.text = res.traceback or res.message
        case.result = [failure]
    elif res.outcome is Outcome.SKIPPED:
        case.result = [Skipped(res.message)]
    if res.log_tail:
        case.system_err = res.log_tail
    return case


def write_variant(path: Path, scenario: str, results: list[VariantResult], repeats: int,
                  suite_props: dict[str, Any], case_props: dict[str, str] | None = None) -> None:
    """All repeats of one variant into one suite; written to a temporary name, then renamed."""
    suite = TestSuite(results[0].variant if results else path.stem)
    for name, value in suite_props.items():
        for v in (value if isinstance(value, list) else [value]):
            suite.add_property(name, str(v))
    # add_testcases counts once; add_testcase per case recounts the suite each time (quadratic)
    cases = []
    for vr in results:
        found = culprit.from_steps(vr.steps)  # a VRAM failure names the engine that held the memory
        cases += [_case(scenario, res, repeats, {**(case_props or {}),
                                                 **(culprit.properties(found[i]) if i in found else {})})
                  for i, res in enumerate(vr.steps)]
    suite.add_testcases(cases)
    xml = JUnitXml()
    xml.add_testsuite(suite)
    atomic.write_junit(path, xml)
