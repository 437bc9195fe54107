"""Engine builds of a pytest session: every ``vllm.LLM`` (and ``HfRunner`` model) a test builds,
with device memory before and after construction and after each action of the variant's profile.

The memory and action events are the worker's own (`StepRunner.sample`, `StepRunner.run_actions`,
with the same labels as for YAML steps), tagged with the build's number within its test; the test
a build belongs to is the one running when it was built (a module-scoped fixture's engine belongs to
the first test that needed it, wherever it is torn down).

Standard library only: this runs inside the variant's interpreter.
"""

from __future__ import annotations

import sys
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

from harness import events as vocab
from harness.device import DEFAULT_GPU_MEMORY_UTILIZATION
from harness.model import Phase
from harness.worker import engines, teardown
from harness.worker.steps import action_event
from harness.upstream.hfhome import HubCache

#: actions that need a vLLM engine; skipped for an HfRunner's model
ENGINE_ONLY = frozenset({"engine_core_shutdown"})


class TaggedEvents:
    """The worker's event stream, with the current build's number added to every event."""

    def __init__(self, events: Any):
        self._events = events
        self.build: int | None = None

    def emit(self, event: str, **fields: Any) -> None:
        if self.build is not None:
            fields.setdefault("build", self.build)
        self._events.emit(event, **fields)


@dataclass
class Build:
    step: dict  # {"name", "index"} of the test it belongs to
    number: int
    util: float
    held: list | None = None  # readings right after construction
    done: bool = False


@dataclass
class Recorder:
    """Builds of the running test; what the replaced ``__init__``/``__exit__`` methods call."""

    plan: dict
    runner: Any  # harness.worker.steps.StepRunner
    events: TaggedEvents
    test: dict | None = None  # the running test, as a step {"name", "index"}
    builds: list[Build] = field(default_factory=list)
    construct_errors: set[int] = field(default_factory=set)  # id() of exceptions construction raised
    teardown_errors: set[int] = field(default_factory=set)
    latency: float | None = None  # release latency of the test's last torn-down build
    wait_s: float = 0.0  # the running test's time in memory waits: the profile's and upstream's helpers'
    live_built_by: list[str] = field(default_factory=list)  # a wait that could never end: who built its holders
    depth: int = 0
    via: str | None = None  # set while a runner's __init__ builds its engine
    _by_object: weakref.WeakKeyDictionary = field(default_factory=weakref.WeakKeyDictionary)

    def __post_init__(self) -> None:
        self.spec = self.plan["pytest"]
        hub = self.spec.get("hub")
        self.hub = HubCache(hub["root"], hub["source"], hub["min_positions"]) if hub else None

    # ------------------------------------------------------------------ tests
    def begin_test(self, step: dict) -> None:
        self.test, self.builds, self.latency = step, [], None
        self.wait_s, self.live_built_by = 0.0, []
        self.construct_errors.clear()
        self.teardown_errors.clear()

    def end_test(self) -> None:
        """Memory after the test for every build no runner tore down (an ``LLM(...)`` the test
        built itself and let go, or one a fixture still holds)."""
        for build in self.builds:
            if not build.done:
                self.events.build = build.number
                self.runner.sample(build.step, "after_test")
                self.events.emit(vocab.ENGINE_END, step=build.step["name"], index=build.step["index"],
                                 torn_down_by=None, release_latency_s=None)
                self.events.build = None
        self.test = None

    def phase_of(self, exc: BaseException, when: str) -> str:
        """Where a test's exception came from: an engine build, a teardown, or the test itself."""
        seen, chain = set(), exc
        while chain is not None and id(chain) not in seen:
            seen.add(id(chain))
            if id(chain) in self.construct_errors:
                return str(Phase.CONSTRUCT)
            if id(chain) in self.teardown_errors:
                return str(Phase.TEARDOWN)
            chain = chain.__cause__ or chain.__context__
        if when == "teardown":
            return str(Phase.TEARDOWN)
        if when == "call":
            return str(Phase.EXPECT if isinstance(exc, AssertionError) else Phase.WORKLOAD)
        # a fixture failed in setup (one that builds an engine or loads a model, typically): the
        # test could not be set up, which the classifier reads as a construction failure
        return str(Phase.CONSTRUCT)

    # ------------------------------------------------------------------ engine arguments
    def seed(self, name: Any) -> str | None:
        """Make a hub name resolve to the run's model; the substitution, or None."""
        if self.hub is not None and isinstance(name, str) and self.hub.seed_name(name):
            return f"model: {name} -> {self.hub.source} (the run's HF_HOME, no model hub here)"
        return None

    def engine_args(self, args: tuple, kwargs: dict) -> tuple[dict, list[str]]:
        kwargs = dict(kwargs)
        subs = []
        for key, value in self.spec.get("engine", {}).items():
            subs.append(f"{key}: {kwargs.get(key, '(default)')} -> {value} (the variant's engine:)")
            kwargs[key] = value
        for name in (kwargs.get("model", args[0] if args else None), kwargs.get("tokenizer")):
            sub = self.seed(name)
            if sub and sub not in subs:
                subs.append(sub)
        multiple, size = self.spec.get("block_multiple"), kwargs.get("block_size")
        if multiple and isinstance(size, int) and not isinstance(size, bool) and size % multiple:
            kwargs["block_size"] = -(-size // multiple) * multiple
            subs.append(f"block_size: {size} -> {kwargs['block_size']} (vLLM on CPU: attention needs a "
                        f"multiple of {multiple})")
        return kwargs, subs

    # ------------------------------------------------------------------ construction
    def _context(self, util: float, llm: Any = None) -> teardown.TeardownContext:
        return self.runner.context(util, llm)

    def _waited(self, ctx: teardown.TeardownContext, error: BaseException | None = None) -> None:
        """A context's waits count to the running test (a module fixture's teardown runs in the
        last test of its module, and costs that test)."""
        self.wait_s += ctx.waited_s
        if isinstance(error, teardown.LiveEngineHolds):
            self.live_built_by = list(error.built_by)

    def helper_waited(self, name: str, seconds: float, error: BaseException | None) -> BaseException | None:
        """Upstream's own memory-wait helper (`name`) ran for ``seconds``; when it failed while
        engines of this process are alive, the error that names them (else None)."""
        step = self.test
        if step is not None:
            self.wait_s += seconds
            action_event(self.events, step, name, seconds, self.runner.probe.read(self.runner.devices),
                         f"{type(error).__name__}: {error}" if error else "")
        live = self.runner.engines.live() if error is not None else []
        if not live:
            return None
        self.live_built_by = list(dict.fromkeys(e.built_by for e in live))
        return teardown.LiveEngineHolds(f"{type(error).__name__}: {error} (upstream's {name} waited for memory "
                                        f"held by a live engine built by {', '.join(self.live_built_by)}: "
                                        "still referenced)", self.live_built_by)

    def construct(self, key: Any, via: str, model: Any, util: float, subs: list[str],
                  build: Callable[[], None]) -> None:
        """Run ``build()`` (the original ``__init__``) as one engine build of the running test."""
        step = self.test
        if step is None or self.depth:  # outside any test, or nested in a build already recorded
            build()
            return
        for s in subs:
            print(f"[harness] substituted {s}", flush=True)
        rec = Build(step, len(self.builds), float(util or DEFAULT_GPU_MEMORY_UTILIZATION))
        self.builds.append(rec)
        r, self.depth, self.events.build = self.runner, self.depth + 1, rec.number
        started, error = time.monotonic(), None
        settle = self._context(rec.util)
        try:
            if self.plan["profile"]["before"]:
                try:
                    r.in_phase(step, Phase.SETTLE, lambda: r.run_actions(step, settle, self.plan["profile"]["before"]))
                finally:
                    self._waited(settle, sys.exc_info()[1])
            baseline = r.sample(step, "before_construct")
            kids = engines.children()
            r.in_phase(step, Phase.CONSTRUCT, build)
            rec.held = r.sample(step, "after_construct")
            r.register(getattr(key, "model", key) if via == "HfRunner" else key, step, rec.number, baseline,
                       rec.held, kids)
            self.events.emit(vocab.THRESHOLD, step=step["name"], index=step["index"],
                             threshold_bytes=sum(self._context(rec.util).threshold_bytes("auto")),
                             engine_bytes=sum(max(0, h - b) for (h, _), (b, _) in zip(rec.held, baseline)))
            self._by_object[key] = rec
        except BaseException as e:
            self.construct_errors.add(id(e))
            error = f"{type(e).__name__}: {e}"
            rec.done = True
            raise
        finally:
            self.events.emit(vocab.ENGINE_START, step=step["name"], index=step["index"], via=via, model=str(model),
                             substitutions=subs, construct_s=time.monotonic() - started, error=error)
            self.depth -= 1
            self.events.build = None

    # ------------------------------------------------------------------ teardown
    def _build_of(self, owner: Any, attr: str, via: str) -> Build | None:
        """The build a runner holds (None outside any test); one made before the harness saw it
        gets a number now."""
        engine = owner.__dict__.get(attr)
        rec = self._by_object.pop(engine if via == "VllmRunner" else owner, None) if engine is not None else None
        del engine  # a teardown must find nothing here that keeps the engine
        step = rec.step if rec is not None else self.test
        if rec is None and step is not None:
            rec = Build(step, len(self.builds), DEFAULT_GPU_MEMORY_UTILIZATION)
            self.builds.append(rec)
        return rec

    def _ended(self, rec: Build, via: str, latency: float | None) -> None:
        self.latency = latency if rec.step is self.test else self.latency
        self.events.emit(vocab.ENGINE_END, step=rec.step["name"], index=rec.step["index"], torn_down_by=via,
                         release_latency_s=latency)
        self.events.build = None
        rec.done = True

    def observe_exit(self, owner: Any, attr: str, via: str, exit_: Callable[[], Any]) -> Any:
        """``native``: the runner's own ``__exit__`` runs as the checkout has it; memory is read once
        it has returned, as the action ``runner_exit``."""
        rec = self._build_of(owner, attr, via)
        if rec is None:
            return exit_()
        r, step, self.events.build = self.runner, rec.step, rec.number
        started, error = time.monotonic(), None
        try:
            return r.in_phase(step, Phase.TEARDOWN, exit_)
        except BaseException as e:
            self.teardown_errors.add(id(e))
            error = f"{type(e).__name__}: {e}"
            raise
        finally:
            readings = r.sample(step, "after_runner_exit")
            action_event(self.events, step, "runner_exit", time.monotonic() - started, readings, error or "")
            free = self._context(rec.util).is_free(readings=readings)
            self._ended(rec, via, time.monotonic() - started if free else None)

    def teardown(self, owner: Any, attr: str, via: str) -> None:
        """Upstream's ``__exit__`` replaced: the runner's reference (``self.llm``/``self.model``)
        moves into a teardown context, then the profile's actions run on it, in order. No other
        reference is kept here (not even an argument), or ``del_llm`` would free nothing."""
        actions = [a for a in self.plan["profile"]["after"] if via != "HfRunner" or a["name"] not in ENGINE_ONLY]
        rec = self._build_of(owner, attr, via)
        ctx = self._context(rec.util if rec else DEFAULT_GPU_MEMORY_UTILIZATION, owner.__dict__.pop(attr, None))
        if rec is None:  # built and torn down outside any test: nothing to record it in
            try:
                for action in actions:
                    teardown.run_action(ctx, action)
            finally:
                ctx.llm = None
            return
        r, step, self.events.build = self.runner, rec.step, rec.number
        ctx.started = time.monotonic()
        try:
            r.in_phase(step, Phase.TEARDOWN, lambda: r.run_actions(step, ctx, actions, rec.held))
        except BaseException as e:
            self.teardown_errors.add(id(e))
            raise
        finally:
            self._waited(ctx, sys.exc_info()[1])
            ctx.llm = None  # whatever the profile did, nothing here keeps the engine
            self._ended(rec, via, ctx.released_at - ctx.started if ctx.released_at is not None else None)
