"""pytest plugin (entry point ``pytest11: teardown_harness``): scenario YAML files as pytest tests.

    scenarios/sim.yaml                         ScenarioFile  one scenario
      scenarios/sim.yaml::with_fix             VariantRun    one (variant, repeat), named <variant> or
                                                             <variant>-r<N> when the scenario repeats
        scenarios/sim.yaml::with_fix::greedy   StepItem      one step's result, a test of its own

A (variant, repeat) is run once, by the harness's runner, in its own worker process: the VariantRun's
setup does it when its first selected step is set up, as a module-scoped fixture would. Every step
item then reports its step (passed, failed with the harness's failure class, message, traceback and
log tail, or skipped), and carries the step's JUnit case properties as ``user_properties``, so
``pytest --junitxml`` holds the harness's cases and properties. ``-k``/``-m`` select steps like any
test; a selected step still runs after its scenario's earlier steps (the leak needs them).

Only YAML files asked for are collected: a file named on the command line, the files under a
command-line directory that is (or lies in) a ``scenarios`` directory, or files matching the
``harness_scenarios`` ini globs; and of those only scenarios (under a ``scenarios`` directory, or
with top-level ``version:`` and ``steps:``).

With pytest-xdist, ``--gpus-per-worker N`` gives every worker its own N devices (harness.ci.pinning), and
the default ``load`` distribution keeps the steps of one (variant, repeat) on one worker.
At the end of the session, the (variant, repeat) run directories of each scenario are merged
(harness.ci.shard) into one, with report and verdict.
"""

from __future__ import annotations

import fnmatch
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

from harness.ci import pinning
from harness.errors import HarnessError, InfrastructureError
from harness.model import Outcome, StepResult, VariantResult
from harness.device import LEDGER_ENV
from harness.device.probes import VISIBLE_ENV, visible_devices
from harness.run.runid import new_run_id  # names this session's run directories
from harness.scenario.yamlsafe import SUFFIXES as YAML_SUFFIXES

SCENARIO_DIR = "scenarios"
# xdist's workerinput keys
PIN_KEY = "teardown_harness_pin"
SESSION_KEY = "teardown_harness_session"


# ----------------------------------------------------------------------------- options and state
def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("teardown-harness", "engine-teardown harness scenarios (teardown_harness)")
    group.addoption("--gpus-per-worker", type=int, metavar="N", default=None,
                    help="give every pytest-xdist worker its own N devices, counted within the outer "
                         "CUDA/HIP/ROCR_VISIBLE_DEVICES when set; refuses more workers than device sets")
    group.addoption("--gpus", type=int, metavar="N", default=None,
                    help="devices to share out with --gpus-per-worker (default: the outer visible list, "
                         "the simulated node of sim scenarios, or what NVML/amdsmi report)")
    group.addoption("--harness-out", metavar="DIR", default="results",
                    help="where scenario run directories go (default: results/)")
    group.addoption("--harness-backend", choices=("vllm", "sim"), default=None,
                    help="run every scenario on this backend")
    parser.addini("harness_scenarios", type="linelist", default=[],
                  help="glob patterns (relative to rootdir) of scenario YAML files to collect even when "
                       "not named on the command line")


@dataclass
class _State:
    out: Path
    session_id: str
    backend: str | None
    rootpath: Path
    files: set[Path] = field(default_factory=set)        # scenario files named on the command line
    dirs: list[Path] = field(default_factory=list)       # command-line directories in a scenarios/ dir
    patterns: list[str] = field(default_factory=list)    # harness_scenarios ini globs
    devices: pinning.Devices | None = None
    pool: pinning.SetPool | None = None                  # xdist controller: sets not handed out yet
    pinned: dict[str, str] | None = None                 # this process's pin
    saved_env: dict[str, str | None] = field(default_factory=dict)
    verdicts: list[str] = field(default_factory=list)
    scenarios: dict[Path, Any] = field(default_factory=dict)  # path -> its loaded Scenario (or its error)

    def scenario(self, path: Path):
        """The scenario file loaded once per session: device counting, collection and the runs share it."""
        from harness.scenario import schema as scenario_mod

        path = Path(path).resolve()
        if path not in self.scenarios:
            try:
                self.scenarios[path] = scenario_mod.load(path)
            except HarnessError as e:
                self.scenarios[path] = e
        found = self.scenarios[path]
        if isinstance(found, HarnessError):
            raise found
        return found

    def asked_for(self, path: Path) -> bool:
        path = path.resolve()
        if path in self.files or any(path.is_relative_to(d) for d in self.dirs):
            return True
        rel = _relative(path, self.rootpath)
        return rel is not None and any(fnmatch.fnmatch(rel, p) for p in self.patterns)

    @property
    def pinned_count(self) -> int | None:
        """Devices this process was pinned to (None: not pinned)."""
        if not self.pinned:
            return None
        return len(next(iter(self.pinned.values())).split(","))

    @property
    def targets_scenarios(self) -> bool:
        return bool(self.files or self.dirs or self.patterns)


_STATE = pytest.StashKey[_State]()
_DEVICES = pytest.StashKey[pinning.Devices]()


def _relative(path: Path, root: Path) -> str | None:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return None


def _in_scenario_dir(path: Path, root: Path, *, is_dir: bool = False) -> bool:
    """A directory named ``scenarios`` holds ``path`` (or is ``path``, for a directory). Only directories
    below the rootdir count, so a checkout that happens to sit in some /scenarios/ folder does not."""
    path = path.resolve()
    rel = _relative(path, root.resolve())
    if rel is None:  # outside the rootdir: only the nearest directory counts
        dirs: tuple[str, ...] = (path.name,) if is_dir else (path.parent.name,)
    else:
        parts = Path(rel).parts
        dirs = parts if is_dir else parts[:-1]
    return SCENARIO_DIR in dirs


def looks_like_scenario(path: Path, root: Path) -> bool:
    """Under a scenarios/ directory, or a YAML mapping with top-level ``version:`` and ``steps:``."""
    if _in_scenario_dir(path, root):
        return True
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read(1 << 20)
    except OSError:
        return False
    return bool(re.search(r"^version\s*:", text, re.M) and re.search(r"^steps\s*:", text, re.M))


def _args(config: pytest.Config) -> tuple[set[Path], list[Path]]:
    files, dirs = set(), []
    base = config.invocation_params.dir
    for arg in config.args:
        path = (base / str(arg).split("::", 1)[0]).resolve()
        if path.is_file() and path.suffix in YAML_SUFFIXES:
            files.add(path)
        elif path.is_dir() and _in_scenario_dir(path, config.rootpath, is_dir=True):
            dirs.append(path)
    return files, dirs


def _new_state(config: pytest.Config) -> _State:
    workerinput = getattr(config, "workerinput", None) or {}
    files, dirs = _args(config)
    return _State(out=(config.invocation_params.dir / config.getoption("harness_out")).resolve(),
                  session_id=workerinput.get(SESSION_KEY) or new_run_id(),
                  backend=config.getoption("harness_backend"), rootpath=config.rootpath,
                  files=files, dirs=dirs, patterns=list(config.getini("harness_scenarios")))


def _session_scenarios(config: pytest.Config, state: _State) -> list[Path]:
    """The scenario files this session will collect, found the way collection finds them."""
    found = set(state.files)
    for d in state.dirs:
        found.update(p for p in d.rglob("*") if p.suffix in YAML_SUFFIXES and p.is_file())
    return sorted(p for p in found if state.asked_for(p) and looks_like_scenario(p, state.rootpath))


# ----------------------------------------------------------------------------- GPU pinning
def _workers(config: pytest.Config) -> int:
    """How many xdist workers this session starts (0: no xdist, the tests run in this process)."""
    if getattr(config.option, "dist", "no") == "no":
        return 0
    return int(getattr(config.option, "numprocesses", 0) or 0)


def _devices(config: pytest.Config) -> pinning.Devices:
    if _DEVICES not in config.stash:
        from harness.run.plan import detect_platform

        gpus = config.getoption("gpus")
        sim_count = None
        if visible_devices() is None and gpus is None:
            sim_count = _sim_count(config)
        try:
            config.stash[_DEVICES] = pinning.discover(os.environ, gpus=gpus, sim_count=sim_count,
                                                      platform=detect_platform())
        except HarnessError as e:
            raise pytest.UsageError(str(e)) from None
    return config.stash[_DEVICES]


def _sim_count(config: pytest.Config) -> int | None:
    """The simulated node's device count when every scenario of the session runs on the sim."""
    state = config.stash.get(_STATE, None) or _new_state(config)
    counts = []
    for path in _session_scenarios(config, state):
        try:
            sc = state.scenario(path)
        except HarnessError:
            continue  # collection reports it
        if (state.backend or sc.backend) != "sim":
            return None
        counts.append(sc.sim.count)
    return min(counts) if counts else None


def _pin(state: _State, env: dict[str, str]) -> None:
    for var in (*VISIBLE_ENV, *env):  # restored at the end of the session
        state.saved_env.setdefault(var, os.environ.get(var))
    os.environ.update(env)
    state.pinned = {k: v for k, v in env.items() if k in VISIBLE_ENV}  # the devices, not the multicast switches


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto`` with ``--gpus-per-worker``: one worker per device set."""
    per_worker = config.getoption("gpus_per_worker")
    if not per_worker:
        return None
    return max(1, len(_devices(config)) // per_worker)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    state = node.config.stash[_STATE]
    node.workerinput[SESSION_KEY] = state.session_id
    if state.pool is not None:
        node.workerinput[PIN_KEY] = pinning.worker_env(state.devices, state.pool.take(node.gateway.id))


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    state = node.config.stash.get(_STATE, None)
    if state is not None and state.pool is not None:
        state.pool.give_back(node.gateway.id)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """xdist's default ``load`` distribution, except that the steps of one (variant, repeat) stay on
    one worker: they are the results of one run. Other tests are scheduled one by one, as by ``load``."""
    state = config.stash.get(_STATE, None)
    if getattr(config.option, "dist", "no") != "load" or state is None or not state.targets_scenarios:
        return None
    from harness.ci.scheduling import ScenarioScheduling

    return ScenarioScheduling(config, log)


# ----------------------------------------------------------------------------- configure
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "scenario(name, backend, variant, profile): a step of an "
                                       "engine-teardown harness scenario (teardown_harness plugin)")
    state = _new_state(config)
    config.stash[_STATE] = state
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:  # an xdist worker: the controller chose its devices
        if workerinput.get(PIN_KEY):
            _pin(state, workerinput[PIN_KEY])
        return
    per_worker = config.getoption("gpus_per_worker")
    if per_worker is None:
        return
    state.devices = _devices(config)
    workers = _workers(config)
    try:
        sets = pinning.device_sets(state.devices, per_worker, max(workers, 1))
    except HarnessError as e:
        raise pytest.UsageError(str(e)) from None
    if workers:
        state.pool = pinning.SetPool(sets)
    else:  # no xdist: this process is the one worker
        _pin(state, pinning.worker_env(state.devices, sets[0]))


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(_STATE, None)
    if state is None:
        return
    for var, value in state.saved_env.items():
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    state = config.stash.get(_STATE, None)
    if state is None or state.devices is None:
        return None
    return [f"teardown harness: {config.getoption('gpus_per_worker')} device(s) per worker from "
            f"{state.devices.source}"]


# ----------------------------------------------------------------------------- collection
def pytest_collect_file(file_path: Path, parent: pytest.Collector):
    if file_path.suffix not in YAML_SUFFIXES:
        return None
    state = parent.config.stash.get(_STATE, None)
    if state is None or not state.asked_for(file_path) or not looks_like_scenario(file_path, state.rootpath):
        return None
    return ScenarioFile.from_parent(parent, path=file_path)


class ScenarioFile(pytest.File):
    """One scenario YAML file; its children are its (variant, repeat) runs."""

    def collect(self) -> Iterator[VariantRun]:
        try:
            sc = self.config.stash[_STATE].scenario(self.path)
        except HarnessError as e:
            raise self.CollectError(str(e)) from None
        if sc.pytest is not None:  # its tests are known only once its own pytest session collects them
            pytest.skip(f"{self.path.name} runs vLLM's own tests: `run.py {self.path.name} --vllm-src DIR`")
        backend = self.config.stash[_STATE].backend or sc.backend
        for v in sc.variants:
            for r in range(sc.repeat):
                yield VariantRun.from_parent(self, name=v.name if sc.repeat == 1 else f"{v.name}-r{r}",
                                             scenario=sc, variant=v.name, repeat=r, backend=backend)


class VariantRun(pytest.Collector):
    """One (variant, repeat): run once, in its own worker process, when its first step is set up."""

    def __init__(self, *, scenario, variant: str, repeat: int, backend: str, **kw):
        super().__init__(**kw)
        self.scenario, self.variant, self.repeat, self.backend = scenario, variant, repeat, backend
        profile = scenario.variant(variant).profile
        self.add_marker(pytest.mark.scenario(name=scenario.name, backend=backend, variant=variant,
                                             profile=profile))
        self.extra_keyword_matches.update({scenario.name, profile})
        self.run_dir: Path | None = None
        self.result: VariantResult | None = None
        self.notes: list[str] = []

    def collect(self) -> Iterator[StepItem]:
        lines = _step_lines(self.path)
        for i, step in enumerate(self.scenario.steps):
            yield StepItem.from_parent(self, name=step.name, index=i, line=lines.get(step.name))

    def setup(self) -> None:
        try:
            self._run()
        except HarnessError as e:
            # one line, as on the command line: no traceback through the plugin, and no "During
            # handling of the above exception" chain that pytest.fail() inside `except` would add
            raise pytest.fail.Exception(f"{type(e).__name__}: {e}", pytrace=False) from None

    def _run(self) -> None:
        from harness.run import runner

        state = self.config.stash[_STATE]
        have = state.pinned_count
        if have is not None and self.scenario.devices > have:
            raise InfrastructureError(f"{self.path}: devices: the scenario needs {self.scenario.devices} devices, "
                                      f"this worker has {have} (--gpus-per-worker {have})")
        opts = runner.RunOptions(out=state.out, backend=state.backend, only=[(self.variant, self.repeat)],
                                 run_id=f"{state.session_id}-{self.variant}-r{self.repeat}",
                                 announce=self.notes.append)
        with _shared_ledger(state, self.scenario, self.backend):
            result = runner.run(self.scenario, opts)
        if result.incomplete:
            raise KeyboardInterrupt
        self.run_dir = result.run_dir
        found = result.variants.get(self.variant) or []
        if not found:
            raise InfrastructureError(f"{result.run_dir}: the runner returned no result for {self.name}")
        self.result = found[0]

    def step(self, name: str) -> StepResult:
        assert self.result is not None
        for res in self.result.steps:
            if res.step == name:
                return res
        raise InfrastructureError(f"{self.run_dir}: no result for step {name!r}")


@contextmanager
def _shared_ledger(state: _State, scenario, backend: str) -> Iterator[None]:
    """Pinned workers share one simulated node per scenario, as they share a real one: a worker that
    strayed onto another's device would meet its memory. Unpinned, each run has its own node."""
    if backend != "sim" or state.pinned is None or os.environ.get(LEDGER_ENV):
        yield
        return
    os.environ[LEDGER_ENV] = str(state.out / scenario.name / f"{state.session_id}.sim-ledger.json")
    try:
        yield
    finally:
        os.environ.pop(LEDGER_ENV, None)


def _step_lines(path: Path) -> dict[str, int]:
    """0-based line of each ``- name: <step>`` (best effort, for pytest's locations and JUnit's line)."""
    lines: dict[str, int] = {}
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return lines
    for i, line in enumerate(text.splitlines()):
        m = re.match(r"""^\s*-\s+name\s*:\s*["']?([^"'#]+?)["']?\s*(#.*)?$""", line)
        if m:
            lines.setdefault(m.group(1), i)
    return lines


# ----------------------------------------------------------------------------- steps
class StepFailed(Exception):
    """A step of the scenario failed; its report is the harness's, not a Python traceback."""

    def __init__(self, res: StepResult, run_dir: Path | None, culprit: str = ""):
        super().__init__(res.message)
        self.res, self.run_dir, self.culprit = res, run_dir, culprit

    def describe(self) -> str:
        res = self.res
        where = f" in {res.phase}" if res.phase else ""
        parts = [f"{res.failure_class}{where}: {res.message}"]
        if self.culprit:
            parts.append(self.culprit)
        tail = res.log_tail.rstrip()[-4000:]
        # the worker logs the traceback it reports: shown once, in the log where it happened
        if res.traceback.strip() and res.traceback.strip() != res.message.strip() and res.traceback.strip() not in tail:
            parts.append(res.traceback.rstrip())
        if tail.strip():
            parts.append("--- worker log (this step) ---\n" + tail)
        if self.run_dir is not None:
            parts.append(f"run directory: {self.run_dir}")
        return "\n\n".join(parts)


class StepItem(pytest.Item):
    """One step of one (variant, repeat): its result, as the harness recorded it."""

    def __init__(self, *, index: int, line: int | None, **kw):
        super().__init__(**kw)
        self.index, self._line = index, line
        self.step_result: StepResult | None = None

    def runtest(self) -> None:
        run = self.parent
        assert isinstance(run, VariantRun)
        res = self.step_result = run.step(self.name)
        found = _culprit(run, res)
        self.user_properties.extend(_properties(run, res, found))
        if res.outcome is Outcome.FAILED:
            raise StepFailed(res, run.run_dir, found.describe() if found else "")
        if res.outcome is Outcome.SKIPPED:
            pytest.skip(res.message or "the step did not run")

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, StepFailed):
            return excinfo.value.describe()
        if isinstance(excinfo.value, HarnessError):
            return f"{type(excinfo.value).__name__}: {excinfo.value}"
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        return self.path, self._line, f"{self.parent.name}::{self.name}"


def _culprit(run: VariantRun, res: StepResult):
    """A VRAM failure's culprit (harness.results.culprit.Culprit): the step whose engine held the memory."""
    from harness.results import culprit

    vr = run.result
    return culprit.from_steps(vr.steps).get(vr.steps.index(res)) if vr is not None and res in vr.steps else None


def _properties(run: VariantRun, res: StepResult, found=None) -> list[tuple[str, str]]:
    """The harness's JUnit case properties, then the run's (its suite properties there)."""
    from harness.results.junit import case_properties

    from harness.results import culprit

    vr = run.result
    info = vr.info if vr is not None else {}
    props = list(case_properties(res).items())
    props += list(culprit.properties(found).items()) if found else []
    props += [("scenario", run.scenario.name), ("variant", run.variant), ("repeat", str(run.repeat)),
              ("teardown_profile", vr.profile if vr else ""), ("backend", run.backend),
              ("platform", str(info.get("platform", ""))), ("device_name", str(info.get("device_name", ""))),
              ("vllm_version", str(info.get("vllm_version", ""))),
              ("torch_version", str(info.get("torch_version", ""))), ("python", str(info.get("python", ""))),
              ("probe", str(info.get("probe", ""))), ("worker_exit", vr.exit_status if vr else ""),
              ("visible_devices", ",".join(visible_devices() or [])),
              ("xdist_worker", os.environ.get("PYTEST_XDIST_WORKER", "")), ("run_dir", str(run.run_dir))]
    props += [("substitution", note.removeprefix("substituted ")) for note in run.notes]
    return props


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if isinstance(item, StepItem) and call.when == "call" and item.step_result is not None:
        report.duration = item.step_result.duration_s  # the step's own wall time, as in the harness's JUnit
    return report


# ----------------------------------------------------------------------------- session end
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Merge each scenario's (variant, repeat) run directories into one, with report and verdict."""
    config = session.config
    state = config.stash.get(_STATE, None)
    if state is None or hasattr(config, "workerinput") or not state.out.is_dir():
        return
    from harness import pipeline
    from harness.ci import shard

    for scenario_dir in sorted(p for p in state.out.iterdir() if p.is_dir()):
        parts = sorted(p for p in scenario_dir.glob(f"{state.session_id}-*") if (p / "run.json").is_file())
        if not parts:
            continue
        try:
            merged = shard.merge(parts, state.out, run_id=state.session_id, announce=lambda _: None)
            report = pipeline.report(merged)
        except Exception as e:  # the steps' results stand; say why there is no verdict
            state.verdicts.append(f"{scenario_dir.name}: no verdict ({type(e).__name__}: {e})")
            continue
        partial = ", only what was selected ran" if report.incomplete else ""
        state.verdicts.append(f"{scenario_dir.name}: {report.verdict} (exit {report.exit_code}{partial}) "
                              f"- {merged / 'report.md'}")


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    state = config.stash.get(_STATE, None)
    if state is None or not state.verdicts:
        return
    terminalreporter.write_sep("-", "teardown harness verdicts")
    for line in state.verdicts:
        terminalreporter.write_line(line)
