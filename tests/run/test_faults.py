"""Faults the harness must survive, with real processes on the simulated device.

Every run here is `python run.py ...` in a subprocess, as CI runs it. Every process a run starts
inherits MARK_ENV from the test, so "nothing is left running" is checked against the whole
process table, not against what the harness itself reports. Waits are polling loops with
generous deadlines (a loaded 2-core CI machine), never fixed sleeps.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from xml.etree import ElementTree

import psutil
import pytest
from junitparser import Failure, JUnitXml, Skipped

from harness.results import events as harness_events
from harness.run import procs
from harness.run import runner
from harness.errors import InfrastructureError
from tests.fixtures import DATA, ROOT, case_props as props, junit_cases as cases

SCENARIOS = DATA / "fault_scenarios"
MARK_ENV = "HARNESS_FAULT_TEST_MARK"
PIDS_ENV = "HARNESS_FAULT_TEST_PIDS"  # fault_hooks.start_engine_child records its children here
RUN_TIMEOUT = 150  # seconds; a healthy run of any scenario here takes a fraction of that


# --------------------------------------------------------------------------- helpers
def wait_for(predicate, timeout: float = 60.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def marked(mark: str, *, token_only: bool = False) -> list[psutil.Process]:
    """Live processes carrying `mark` (with a harness run token, if `token_only`). Zombies are dead."""
    found = []
    for proc in psutil.process_iter():
        try:
            env = proc.environ()
            if env.get(MARK_ENV) != mark or (token_only and procs.TOKEN_ENV not in env):
                continue
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def assert_nothing_left(mark: str) -> None:
    """No process of the run is alive: none with a run token, and none with the test's mark at all."""
    assert wait_for(lambda: not marked(mark), timeout=15), \
        f"left running: {[(p.pid, ' '.join(p.cmdline())) for p in marked(mark)]}"


@pytest.fixture
def mark():
    """A mark for every process this test starts; whatever still carries it at the end is killed."""
    value = uuid.uuid4().hex
    yield value
    for proc in marked(value):
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass


def env_for(mark: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HARNESS_SIM_LEDGER", procs.TOKEN_ENV)}
    env.update({MARK_ENV: mark, "PYTHONUNBUFFERED": "1", **extra})
    return env


def run_cli(args: list[str], mark: str, *, timeout: float = RUN_TIMEOUT, preexec_fn=None,
            **extra_env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, env=env_for(mark, **extra_env),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
                          preexec_fn=preexec_fn)


def only_run_dir(out: Path) -> Path:
    dirs = [p for p in out.glob("*/*") if p.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def outcome(case) -> str:
    if any(isinstance(r, Failure) for r in case.result):
        return "failed"
    if any(isinstance(r, Skipped) for r in case.result):
        return "skipped"
    return "passed"


def failure(case) -> Failure:
    return next(r for r in case.result if isinstance(r, Failure))


def assert_valid_junit(path: Path, tests: int, failures: int, skipped: int) -> None:
    root = ElementTree.parse(path).getroot()  # well-formed XML
    assert root.tag == "testsuites"
    suites = list(JUnitXml.fromfile(str(path)))
    assert len(suites) == 1
    suite = suites[0]
    assert (suite.tests, suite.failures, suite.errors, suite.skipped) == (tests, failures, 0, skipped)
    assert not list(path.parent.glob(".*.tmp")), "a temporary file was left next to the results"


def load_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- 1. hangs
@pytest.fixture(scope="module")
def hang_run(tmp_path_factory):
    """One run of hang.yaml: a hang in construction, workload and teardown, then a clean variant."""
    tmp = tmp_path_factory.mktemp("hang")
    value, pids = uuid.uuid4().hex, tmp / "children.txt"
    start = time.monotonic()
    try:
        proc = run_cli([str(SCENARIOS / "hang.yaml"), "--out", str(tmp / "out")], value,
                       **{PIDS_ENV: str(pids)})
        elapsed = time.monotonic() - start
        leftovers = wait_for(lambda: not marked(value), timeout=15)
        yield {"proc": proc, "run_dir": only_run_dir(tmp / "out"), "elapsed": elapsed, "clean": leftovers,
               "children": [tuple(map(int, line.split())) for line in pids.read_text().splitlines()]}
    finally:
        for p in marked(value):
            p.kill()


@pytest.mark.parametrize("phase", ["construct", "workload", "teardown"])
def test_a_hung_step_becomes_timeout_and_later_steps_are_skipped(hang_run, phase):
    run_dir = hang_run["run_dir"]
    path = run_dir / f"hang_{phase}.xml"
    assert_valid_junit(path, tests=3, failures=1, skipped=1)
    by_name = cases(path)
    assert outcome(by_name["s1"]) == "passed"
    s2 = by_name["s2"]
    assert outcome(s2) == "failed"
    assert failure(s2).type == "timeout"
    assert failure(s2).message == f"Timeout: step exceeded 3 s in phase {phase}"
    assert props(s2)["failure_class"] == "timeout" and props(s2)["phase"] == phase
    assert s2.time >= 3.0
    assert f"[inject] hanging in s2/{phase}" in s2.system_err  # the step's log tail
    assert outcome(by_name["s3"]) == "skipped"
    assert "worker stopped during step 's2'" in by_name["s3"].result[0].message


def test_after_a_hang_the_run_goes_on_and_nothing_is_left(hang_run):
    proc, run_dir = hang_run["proc"], hang_run["run_dir"]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.returncode == 1, proc.stderr  # three variants regress against the clean baseline
    # the next variant after each hang ran, and the last one is untouched by them
    assert [outcome(c) for c in cases(run_dir / "clean.xml").values()] == ["passed"] * 3
    summary = load_json(run_dir / "summary.json")
    assert summary["verdict"] == "regression" and not summary["incomplete"]
    run = load_json(run_dir / "run.json")
    assert run["incomplete"] is False and run["orphans"] == []
    # each hang was ended by its step timeout (3 s), not by waiting for the worker: well under a minute
    assert hang_run["elapsed"] < 90
    assert hang_run["clean"], "a process of the run was left running"


def test_a_hung_workers_whole_process_group_is_stopped(hang_run):
    """Each worker left a stand-in engine child in its group; stopping the group ended them all,
    so the orphan sweep found nothing."""
    children = hang_run["children"]
    workers = {worker for _, _, worker in children}
    assert len(workers) == 4  # every variant's worker started one (the clean one three)
    for child, pgid, worker in children:
        assert pgid == worker  # the child is in the worker's process group, not escaped from it
        assert wait_for(lambda: not alive(child), timeout=15), f"engine child {child} survived"
    assert load_json(hang_run["run_dir"] / "run.json")["orphans"] == []


# --------------------------------------------------------------------------- 2. crashes
@pytest.fixture(scope="module")
def crash_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("crash")
    value, pids = uuid.uuid4().hex, tmp / "children.txt"
    try:
        proc = run_cli([str(SCENARIOS / "crash.yaml"), "--out", str(tmp / "out")], value,
                       **{PIDS_ENV: str(pids)})
        leftovers = wait_for(lambda: not marked(value), timeout=15)
        yield {"proc": proc, "run_dir": only_run_dir(tmp / "out"), "clean": leftovers,
               "children": [tuple(map(int, line.split())) for line in pids.read_text().splitlines()]}
    finally:
        for p in marked(value):
            p.kill()


@pytest.mark.parametrize("variant, signame, phase", [
    ("kill_worker", "SIGKILL", "workload"),
    ("segv_worker", "SIGSEGV", "construct"),
    ("kill_engine", "SIGKILL", "teardown"),  # no engine child on the sim: the worker itself dies
])
def test_a_crash_is_a_result_with_the_signal_and_the_log_tail(crash_run, variant, signame, phase):
    path = crash_run["run_dir"] / f"{variant}.xml"
    assert_valid_junit(path, tests=3, failures=1, skipped=1)
    by_name = cases(path)
    s1 = by_name["s1"]  # finished before the crash: keeps its result and its measurements
    assert outcome(s1) == "passed"
    assert float(props(s1)["construct_s"]) > 0 and "mem_after_wait_memory_bytes" in props(s1)
    s2 = by_name["s2"]
    assert outcome(s2) == "failed"
    assert failure(s2).type == "crash" and props(s2)["failure_class"] == "crash"
    assert f"killed by {signame}" in failure(s2).message and f"in phase {phase}" in failure(s2).message
    target = "engine" if variant == "kill_engine" else "worker"
    assert f"[inject] {target} gets {signame}" in s2.system_err
    # a SIGKILL says where it usually comes from; other signals do not get that note
    assert ("OOM killer" in failure(s2).message) == (signame == "SIGKILL")
    assert outcome(by_name["s3"]) == "skipped"
    suite = ElementTree.parse(path).getroot().find("testsuite")
    worker_exit = [p.get("value") for p in suite.findall("properties/property") if p.get("name") == "worker_exit"]
    assert worker_exit == [f"killed by {signame}"]


def test_a_killed_engine_child_is_a_crash_and_the_worker_goes_on(crash_run):
    """The stand-in engine child (in the worker's group, as vLLM's EngineCore) is SIGKILLed during
    s2's workload: s2 is a `crash` naming the child and the signal, and the worker, alive, runs s3
    with a new engine, as a pytest worker goes on to its next test after an EngineDeadError."""
    path = crash_run["run_dir"] / "kill_engine_child.xml"
    assert_valid_junit(path, tests=3, failures=1, skipped=0)
    by_name = cases(path)
    s2 = by_name["s2"]
    assert failure(s2).type == "crash" and props(s2)["phase"] == "workload"
    message = failure(s2).message
    assert message.startswith("EngineDeadError: engine process died unexpectedly: pid ")
    assert "killed by SIGKILL" in message and harness_events.SIGKILL_NOTE in message
    assert "[inject] engine gets SIGKILL" in s2.system_err
    killed = int(message.split("pid ")[1].split()[0])
    assert killed in {child for child, _, _ in crash_run["children"]}  # the child s1's teardown started
    assert [outcome(by_name[s]) for s in ("s1", "s3")] == ["passed", "passed"]
    suite = ElementTree.parse(path).getroot().find("testsuite")
    assert [p.get("value") for p in suite.findall("properties/property") if p.get("name") == "worker_exit"] == ["ok"]


def test_after_crashes_the_run_goes_on_and_the_files_are_usable(crash_run):
    proc, run_dir = crash_run["proc"], crash_run["run_dir"]
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert [outcome(c) for c in cases(run_dir / "clean.xml").values()] == ["passed"] * 3
    summary = load_json(run_dir / "summary.json")
    cells = {row["step"]: row["variants"] for row in summary["cases"]}
    crashed = ("kill_worker", "segv_worker", "kill_engine", "kill_engine_child")
    assert {v: cells["s2"][v]["failure_class"] for v in crashed} == dict.fromkeys(crashed, "crash")
    # the crashed variant's JUnit is a normal input for the other commands
    diff = subprocess.run([sys.executable, "run.py", "diff", str(run_dir / "clean.xml"),
                           str(run_dir / "kill_worker.xml"), "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert diff.returncode == 1, diff.stderr  # s2 regressed
    transitions = {c["name"]: c["transition"] for c in json.loads(diff.stdout)["cases"]}
    assert transitions == {"s1": "unchanged", "s2": "regression", "s3": "skipped"}
    # every event the workers wrote before dying is in the merged stream
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    # s1 of each variant whose worker died, all three of kill_engine_child and of clean
    assert sum(e["event"] == "step_end" for e in events) == 1 + 1 + 1 + 3 + 3
    assert crash_run["clean"], "a process of the run was left running"
    for child, pgid, worker in crash_run["children"]:
        assert pgid == worker
        assert wait_for(lambda: not alive(child), timeout=15), f"engine child {child} survived its dead worker"
    assert load_json(run_dir / "run.json")["orphans"] == []


# --------------------------------------------------------------------------- 3. interrupts
def _default_sigint():
    # A shell that starts a job in the background without job control sets SIGINT to "ignore",
    # and Python keeps it ignored; a terminal's Ctrl-C reaches a run with the default handler.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(scenario: str, out: Path, mark: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "run.py", str(SCENARIOS / scenario), "--out", str(out)], cwd=ROOT,
                            env=env_for(mark), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=_default_sigint)


def _log_says(out: Path, variant: str, text: str) -> bool:
    return any(text in p.read_text(errors="replace") for p in out.glob(f"*/*/logs/{variant}-r0.log"))


def _check_interrupted_run(proc: subprocess.Popen, out: Path, mark: str) -> None:
    stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT)
    assert proc.returncode == 130, stdout + stderr
    assert "Traceback" not in stdout + stderr
    assert_nothing_left(mark)
    run_dir = only_run_dir(out)
    run = load_json(run_dir / "run.json")
    assert run["incomplete"] is True and run["finished"]
    # what finished is written: the hung variant's JUnit, the merged events, the report
    assert_valid_junit(run_dir / "hangs.xml", tests=3, failures=0, skipped=2)
    by_name = cases(run_dir / "hangs.xml")
    assert outcome(by_name["s1"]) == "passed"
    assert "interrupted" in by_name["s2"].result[0].message
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["event"] == "step_start"] == ["s1", "s2"]
    assert not (run_dir / "after.xml").exists()  # the next variant never started
    summary = load_json(run_dir / "summary.json")
    assert summary["incomplete"] is True and summary["missing"] == ["after"]
    assert "INCOMPLETE" in (run_dir / "report.md").read_text()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupt_stops_the_children_and_keeps_the_results(tmp_path, mark, sig):
    out = tmp_path / "out"
    proc = _start("interrupt.yaml", out, mark)
    try:
        assert wait_for(lambda: _log_says(out, "hangs", "[inject] hanging in s2/workload"), timeout=90), \
            "the worker never reached the hang"
        assert marked(mark, token_only=True), "no worker running during the hang"
        proc.send_signal(sig)
        _check_interrupted_run(proc, out, mark)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_second_signal_during_the_cleanup_escalates_to_sigkill(tmp_path, mark):
    """The worker ignores SIGTERM and the stop grace is 90 s. A second signal (GitHub Actions sends
    SIGINT, then SIGTERM) must end the wait with SIGKILL, not abandon the worker."""
    out = tmp_path / "out"
    proc = _start("interrupt_stubborn.yaml", out, mark)
    try:
        assert wait_for(lambda: _log_says(out, "hangs", "[inject] hanging in s2/workload"), timeout=90)
        proc.send_signal(signal.SIGINT)
        assert wait_for(lambda: _log_says(out, "hangs", "[hook] SIGTERM received and ignored"), timeout=60), \
            "the runner never asked the worker to stop"
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _check_interrupted_run(proc, out, mark)
        assert time.monotonic() - sent < 60  # far less than the 90 s grace
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _worker_of(mark: str) -> psutil.Process | None:
    workers = [p for p in marked(mark, token_only=True) if "harness.run.worker" in p.cmdline()]
    return workers[0] if len(workers) == 1 else None


def test_a_worker_killed_from_outside_is_a_crash_naming_sigkill(tmp_path, mark):
    """What the kernel's OOM killer does: SIGKILL from another process, in the middle of a step.
    The step is a `crash` that names SIGKILL and says where it usually comes from, the engine child
    left in the worker's group is stopped, and the next variant runs."""
    out, pids = tmp_path / "out", tmp_path / "children.txt"
    proc = subprocess.Popen([sys.executable, "run.py", str(SCENARIOS / "killed.yaml"), "--out", str(out)],
                            cwd=ROOT, env=env_for(mark, **{PIDS_ENV: str(pids)}), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert wait_for(lambda: _log_says(out, "killed", "[inject] hanging in s2/workload"), timeout=90)
        worker = _worker_of(mark)
        assert worker is not None, [p.cmdline() for p in marked(mark)]
        worker.kill()
        stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, stdout + stderr  # a crash where the baseline passes: a regression
    assert "Traceback" not in stdout + stderr
    run_dir = only_run_dir(out)
    path = run_dir / "killed.xml"
    assert_valid_junit(path, tests=3, failures=1, skipped=1)
    by_name = cases(path)
    s2 = by_name["s2"]
    assert failure(s2).type == "crash"
    assert failure(s2).message == ("WorkerDied: the worker process died (killed by SIGKILL) in phase workload; "
                                   + harness_events.SIGKILL_NOTE)
    assert "[inject] hanging in s2/workload" in s2.system_err
    assert [outcome(by_name[s]) for s in ("s1", "s3")] == ["passed", "skipped"]
    assert [outcome(c) for c in cases(run_dir / "after.xml").values()] == ["passed"] * 3
    ((child, pgid, worker_pid),) = [tuple(map(int, line.split())) for line in pids.read_text().splitlines()]
    assert pgid == worker_pid == worker.pid
    assert wait_for(lambda: not alive(child), timeout=15), "the engine child outlived its killed worker"
    assert load_json(run_dir / "run.json")["orphans"] == []
    assert_nothing_left(mark)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupt_between_variants_keeps_the_finished_one(tmp_path, mark, sig):
    """No worker runs: the runner waits for the first variant's memory to come back before the
    next one (120 s on this device). The interrupt ends that wait at once; what finished is kept."""
    out = tmp_path / "out"
    proc = _start("interrupt_between.yaml", out, mark)
    try:
        assert wait_for(lambda: list(out.glob("*/*/first.xml")), timeout=90), "the first variant never finished"
        assert not marked(mark, token_only=True), "a worker is still running"
        sent = time.monotonic()
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert time.monotonic() - sent < 30  # not after the settle wait's 120 s
    assert proc.returncode == 130, stdout + stderr
    assert "Traceback" not in stdout + stderr
    run_dir = only_run_dir(out)
    assert_valid_junit(run_dir / "first.xml", tests=1, failures=0, skipped=0)
    assert not (run_dir / "after.xml").exists() and not list(run_dir.glob("logs/after-*"))
    run = load_json(run_dir / "run.json")
    assert run["incomplete"] is True and run["finished"]
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert [(e["variant"], e["step"]) for e in events if e["event"] == "step_end"] == [("first", "s1")]
    summary = load_json(run_dir / "summary.json")
    assert summary["incomplete"] is True and summary["missing"] == ["after"]
    assert "INCOMPLETE" in (run_dir / "report.md").read_text()
    assert_nothing_left(mark)


# --------------------------------------------------------------------------- 4. orphans
def test_an_orphaned_grandchild_is_killed_and_named_with_its_memory(tmp_path, mark):
    out = tmp_path / "out"
    proc = run_cli([str(SCENARIOS / "orphan.yaml"), "--out", str(out)], mark)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_dir = only_run_dir(out)
    orphans = load_json(run_dir / "run.json")["orphans"]
    assert len(orphans) == 1, orphans
    orphan = orphans[0]
    assert orphan["variant"] == "leaks" and orphan["repeat"] == 0
    assert orphan["rss_bytes"] >= 32 << 20  # the 32 MiB it touched
    assert orphan["device_bytes"] == 32 << 20  # what the sim ledger says it held
    assert load_json(run_dir / "summary.json")["orphans"] == orphans
    assert f"pid={orphan['pid']}" in (run_dir / "report.md").read_text()
    assert wait_for(lambda: not alive(orphan["pid"]), timeout=15)
    assert_nothing_left(mark)
    # the sweep ran after the leaking variant, before the next one: that one found its memory back
    assert [outcome(c) for c in cases(run_dir / "after.xml").values()] == ["passed"] * 3


# --------------------------------------------------------------------------- 5. results never lost
def test_an_existing_run_directory_is_never_overwritten(tmp_path):
    run_dir = tmp_path / "fault_hang" / "20250101-000000-abcd"
    (run_dir / "logs").mkdir(parents=True)
    (run_dir / "run.json").write_text("precious")
    with pytest.raises(InfrastructureError, match="exists already; refusing to overwrite"):
        runner.make_run_dir(tmp_path, "fault_hang", run_dir.name)
    opts = runner.RunOptions(out=tmp_path, run_id=run_dir.name, announce=lambda _: None)
    with pytest.raises(InfrastructureError, match="exists already"):
        runner.run(SCENARIOS / "hang.yaml", opts)
    assert (run_dir / "run.json").read_text() == "precious"
    assert sorted(p.name for p in run_dir.iterdir()) == ["logs", "run.json"]


def _small_files():
    """RLIMIT_FSIZE makes every write past 16 KiB fail (EFBIG), as a full disk fails with ENOSPC."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 10, 16 << 10))


def test_a_write_that_fails_leaves_the_previous_file_whole(tmp_path):
    """Results are rewritten during a run (run.json, each variant's JUnit); a disk that fills up
    meanwhile must leave the previous version readable, and no partial file next to it."""
    target = tmp_path / "summary.json"
    target.write_text('{"verdict": "fix confirmed"}\n')
    code = ("import sys, pathlib; from harness import atomic; "
            "atomic.write_text(pathlib.Path(sys.argv[1]), 'x' * (1 << 20))")
    proc = subprocess.run([sys.executable, "-c", code, str(target)], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, preexec_fn=_small_files)
    assert proc.returncode == 1 and "File too large" in proc.stderr, proc.stderr
    assert target.read_text() == '{"verdict": "fix confirmed"}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def _refused_before_any_engine(proc: subprocess.CompletedProcess, mark: str, *fragments: str) -> None:
    assert proc.returncode == 3, proc.stdout + proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert "PASS" not in proc.stdout and "FAIL" not in proc.stdout  # no step ran
    assert_nothing_left(mark)


@pytest.mark.parametrize("where", ["below_a_file", "a_file", "scenario_folder_is_a_file"])
def test_an_unusable_results_directory_is_an_error_before_any_engine(tmp_path, mark, where):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a directory")
    out = {"below_a_file": blocker / "sub", "a_file": blocker, "scenario_folder_is_a_file": tmp_path}[where]
    if where == "scenario_folder_is_a_file":
        (tmp_path / "fault_orphan").write_text("in the way")
    proc = run_cli([str(SCENARIOS / "orphan.yaml"), "--out", str(out)], mark)
    _refused_before_any_engine(proc, mark, "results directory is not writable", str(out))
    assert blocker.read_text() == "not a directory"


def test_a_full_results_disk_is_an_error_before_any_engine(tmp_path, mark):
    out = tmp_path / "out"
    proc = run_cli([str(SCENARIOS / "orphan.yaml"), "--out", str(out)], mark, preexec_fn=_small_files)
    _refused_before_any_engine(proc, mark, "results directory is not writable", "too large")
    assert not list(out.glob("*/*/logs/*")), "a worker was started"


# --------------------------------------------------------------------------- 6. injected slow release
def test_a_slow_release_at_one_step_delays_only_that_engines_memory(tmp_path, mark):
    """`lazy_release: {seconds: 4, step: s2}`: only s2's engine comes back late. Without a wait the
    next construction fails on it (the failure this tool hunts); with the fix's wait it passes, and
    the release latency shows the 4 s in s2 alone."""
    out = tmp_path / "out"
    proc = run_cli([str(SCENARIOS / "slow_release.yaml"), "--out", str(out)], mark)
    assert proc.returncode == 0, proc.stdout + proc.stderr  # fix confirmed
    run_dir = only_run_dir(out)
    without = cases(run_dir / "without_fix.xml")
    assert [outcome(c) for c in without.values()] == ["passed", "passed", "failed"]
    assert props(without["s3"])["failure_class"] == "vram_construction"
    assert "on startup is less than desired GPU memory utilization" in failure(without["s3"]).message
    with_fix = cases(run_dir / "with_fix.xml")
    assert [outcome(c) for c in with_fix.values()] == ["passed"] * 3
    latency = {name: float(props(case)["release_latency_s"]) for name, case in with_fix.items()}
    assert 4.0 <= latency["s2"] < 15, latency
    assert latency["s1"] < 1.0 and latency["s3"] < 1.0, latency
    assert load_json(run_dir / "summary.json")["verdict"] == "fix confirmed"
    assert_nothing_left(mark)
