"""A pytest-suite worker's events into cases, and its collection problems into one clear line each.

The tests to expect are the ``collected`` event's (named as ``pytest --junitxml`` names them). A
file that could not be collected is a failed case of its own, named as pytest's junitxml names a
collection error, and a line that says which file, which module is missing and which vLLM versions
are involved; a session that collected nothing is never a silent "0 tests".
"""

from __future__ import annotations

from pathlib import Path

from harness import events as vocab
from harness.model import FailureClass, Outcome, StepResult
from harness.results.events import log_slice


def _first(events: list[dict], kind: str) -> dict | None:
    return next((ev for ev in events if ev.get("event") == kind), None)


def planned_steps(events: list[dict]) -> list[dict]:
    """The collected tests; none when collection failed and pytest therefore ran nothing (its own
    junitxml then holds only the errors; with --continue-on-collection-errors it runs the rest)."""
    collected = _first(events, vocab.COLLECTED)
    if collected is None:
        return []
    if _first(events, vocab.COLLECT_ERROR) is not None and _first(events, vocab.STEP_START) is None:
        return []
    return collected["tests"]


def extra_cases(events: list[dict], log: Path, exit_description: str) -> list[StepResult]:
    cases = [StepResult(ev["name"], 0, Outcome.FAILED, failure_class=FailureClass.CONSTRUCTION_ERROR,
                        message=_last_line(ev["text"]) or "collection failure", traceback=ev["text"],
                        classname=ev["classname"])
             for ev in events if ev.get("event") == vocab.COLLECT_ERROR]
    if not cases and _first(events, vocab.COLLECTED) is None:
        cases.append(StepResult("session", 0, Outcome.FAILED, failure_class=FailureClass.CRASH,
                                message=f"WorkerDied: the pytest session ended before collecting ({exit_description})",
                                log_tail=log_slice(log, 0), classname="pytest"))
    return cases


def problems(events: list[dict], variant: str, interpreter: str, args: list[str], log: Path) -> list[str]:
    """One line per reason the suite did not run as asked."""
    start = _first(events, vocab.WORKER_START) or {}
    info = start.get("info", {})
    versions = (f"variant {variant} runs {interpreter} with vLLM {info.get('vllm_version', 'unknown')}; "
                f"the checkout {info.get('rootdir', '?')} is vLLM {info.get('checkout_vllm_version', 'unknown')}")
    out = []
    for ev in events:
        if ev.get("event") != vocab.COLLECT_ERROR:
            continue
        module = ev.get("module")
        if module and module.split(".")[0] == "vllm":
            why = f"{module} is missing: these tests were written for another vLLM than the variant's"
        elif module:
            why = f"{module} is missing: a test dependency the variant's interpreter lacks " \
                  "(README, \"Running vLLM's own tests\")"
        else:
            why = _last_line(ev["text"])
        out.append(f"{ev['where']}: cannot be collected: {why} ({versions})")
    collected = _first(events, vocab.COLLECTED)
    end = _first(events, vocab.WORKER_END) or {}
    if not out and collected is not None and not collected["tests"]:
        said = _last_line(log_slice(log, 0), "ERROR") if end.get("pytest_exit") == 4 else ""
        out.append(f"pytest.args: no tests collected with {args} in {info.get('rootdir', '?')}"
                   + (f": {said}" if said else ""))
    elif not out and collected is None:
        out.append(f"variant {variant}: the pytest session ended before collecting any test; "
                   f"see {log} ({versions})")
    return out


def _last_line(text: str, containing: str = "") -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and containing in ln]
    return lines[-1] if lines else ""
