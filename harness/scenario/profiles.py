"""The teardown profiles a scenario may name without defining them, as data, each with the upstream
code it reproduces (README's profile table; `run.py validate --profiles` prints them).

A profile is an ordered list of actions (scenario/specs.py names them, run/teardown.py runs them)
after each step and, optionally, before each construction. ``native`` has none: a pytest suite then
keeps its checkout's own teardown and the harness only observes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping


@dataclass(frozen=True)
class Action:
    """One teardown action: a name from specs.ACTIONS and its parameters."""

    name: str
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": dict(self.params)}


@dataclass(frozen=True)
class Profile:
    name: str
    after: tuple[Action, ...]
    before: tuple[Action, ...] = ()


def _actions(*specs: str | tuple[str, dict]) -> tuple[Action, ...]:
    return tuple(Action(s, MappingProxyType({})) if isinstance(s, str)
                 else Action(s[0], MappingProxyType(s[1])) for s in specs)


_SHUTDOWN = ("engine_core_shutdown", {"ignore_errors": True})
_LEGACY = (_SHUTDOWN, "del_llm", "cleanup_dist_env")
_SETTLE = ("wait_memory", {"threshold": "auto", "timeout_s": 240.0, "stable_s": 2.0, "floor_bytes": 4 << 30})
#: the built-ins, each with what it reproduces (README, `run.py validate --profiles`)
BUILTIN_PROFILES: Mapping[str, Profile] = MappingProxyType({
    "bare": Profile("bare", _actions("del_llm", "gc_collect")),
    "legacy": Profile("legacy", _actions(*_LEGACY)),
    "fixed": Profile("fixed", _actions(*_LEGACY, ("wait_memory", {"threshold": "auto", "timeout_s": 120.0}))),
    "settle": Profile("settle", _actions(("engine_core_shutdown", {"timeout_s": 60.0, "ignore_errors": True}),
                                         "del_llm", "dynamo_reset", "cleanup_dist_env", _SETTLE),
                      before=_actions(_SETTLE)),
    "native": Profile("native", ()),  # pytest suites: the checkout's own teardown, observed only
})
PROFILE_SOURCES: Mapping[str, str] = MappingProxyType({
    "bare": "a test that builds LLM(...) directly: `del llm`, then the garbage collector",
    "legacy": "upstream's VllmRunner.__exit__ before PR #43023 (commit 9aaf83ef, tests/conftest.py)",
    "fixed": "PR #43023's VllmRunner.__exit__ (released in 0.22.0): legacy, then wait until used <= "
             "(1 - gpu_memory_utilization) x total, 120 s",
    "settle": "today's upstream (ROCm's vLLM, tests/conftest.py and tests/utils.py): shutdown(timeout=60), "
              "torch._dynamo.reset(), wait_for_rocm_memory_to_settle (2 s stable, 4 GiB floor, 240 s) after "
              "each runner and before each construction",
    "native": "a pytest suite's own checkout: its VllmRunner/HfRunner.__exit__, cleanup_fixture and "
              "VLLM_TEST_CLEAN_GPU_MEMORY as they are; the harness only observes",
})
