"""The `pytest` suite kind (harness/run/kinds.py): vLLM's own test files, one pytest session per
worker, instead of a scenario's steps. Each method hands one stage its part of a pytest suite."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from harness.model import StepResult, Substitution
from harness.upstream import planning, results, suite


class PytestSuite:
    """A scenario with a ``pytest:`` block."""

    name = "pytest"

    def plan(self, scenario, *, backend: str, host_platform: str, vllm_src: Any, model: str | None,
             tiny_model: Callable[[], Path], checkout_ref: str | None = None
             ) -> tuple[dict[str, Any], list[Substitution]]:
        """The run's ``pytest`` section and the substitutions it makes (upstream/planning.py);
        `checkout_ref`: `vllm_src` is that revision's tree, for every variant (bisect)."""
        return planning.plan(scenario, backend=backend, host_platform=host_platform, vllm_src=vllm_src,
                             model=model, tiny_model=tiny_model, checkout_ref=checkout_ref)

    def worker_section(self, section: dict[str, Any] | None, variant, run_dir: Path) -> dict[str, Any] | None:
        """One worker plan's ``pytest`` section."""
        return planning.worker_section(section, variant, run_dir) if section is not None else None

    def worker_main(self, plan: dict[str, Any]) -> int:
        """Inside the worker: one pytest session over the files (never returns)."""
        return suite.main(plan)

    def planned_steps(self, plan: dict[str, Any], events: list[dict]) -> list[dict]:
        """The tests are known once the worker's session has collected them."""
        return results.planned_steps(events)

    def extra_cases(self, events: list[dict], log: Path, exit_description: str) -> list[StepResult]:
        """Files that could not be collected (a session that collected nothing) as failed cases."""
        return results.extra_cases(events, log, exit_description)

    def problems(self, events: list[dict], variant: str, interpreter: str, plan: dict[str, Any],
                 log: Path) -> list[str]:
        """One line per reason the suite did not run as asked."""
        return results.problems(events, variant, interpreter, plan["pytest"]["args"], log)
