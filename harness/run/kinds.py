"""Suite kinds: what differs between a scenario's own `steps:` and a `pytest:` suite of vLLM's
own test files, behind one interface, found by name. The planner, the worker's entry point and the
runner ask the kind; none of them branches on ``pytest`` itself.

A kind is planned (its worker-plan section and substitutions), run inside the worker, and read
back (which steps were planned, which extra cases and problems its events show).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Protocol

from harness import backends
from harness.model import StepResult, Substitution
from harness.upstream.kind import PytestSuite
from harness.worker import steps


class SuiteKind(Protocol):
    name: str

    def plan(self, scenario, *, backend: str, host_platform: str, vllm_src: Any, model: str | None,
             tiny_model: Callable[[], Path], checkout_ref: str | None = None
             ) -> tuple[dict[str, Any] | None, list[Substitution]]: ...
    def worker_section(self, section: dict[str, Any] | None, variant, run_dir: Path) -> dict[str, Any] | None: ...
    def worker_main(self, plan: dict[str, Any]) -> int: ...
    def planned_steps(self, plan: dict[str, Any], events: list[dict]) -> list[dict]: ...
    def extra_cases(self, events: list[dict], log: Path, exit_description: str) -> list[StepResult]: ...
    def problems(self, events: list[dict], variant: str, interpreter: str, plan: dict[str, Any],
                 log: Path) -> list[str]: ...


class Steps:
    """A scenario's own steps: planned by run/plan.py, run by harness/worker/steps.py."""

    name = "steps"

    def plan(self, scenario, **_: Any) -> tuple[None, list[Substitution]]:
        """Nothing beyond the steps run/plan.py already planned."""
        return None, []

    def worker_section(self, section: dict[str, Any] | None, variant, run_dir: Path) -> None:
        """No section: the worker plan's ``steps`` say it all."""
        return None

    def worker_main(self, plan: dict[str, Any]) -> int:
        """Inside the worker: every step with the plan's backend (never returns)."""
        return steps.main(plan, backends.load(plan))

    def planned_steps(self, plan: dict[str, Any], events: list[dict]) -> list[dict]:
        """The plan's steps."""
        return plan["steps"]

    def extra_cases(self, events: list[dict], log: Path, exit_description: str) -> list[StepResult]:
        """None: every case is a planned step."""
        return []

    def problems(self, events: list[dict], variant: str, interpreter: str, plan: dict[str, Any],
                 log: Path) -> list[str]:
        """None: a steps scenario runs as asked or fails its steps."""
        return []


#: every suite kind by name
KINDS: dict[str, SuiteKind] = {"steps": Steps(), "pytest": PytestSuite()}


def of_scenario(scenario) -> SuiteKind:
    """The kind of a loaded scenario."""
    return KINDS["pytest" if scenario.pytest is not None else "steps"]


def of_plan(plan: dict[str, Any]) -> SuiteKind:
    """The kind of a worker plan."""
    return KINDS["pytest" if plan.get("pytest") else "steps"]
