"""Faults a hostile world brings: a runner killed by SIGKILL, a disk that fills mid-run, Ctrl-C
while the program is still importing, two writers of one file, an interpreter that cannot run the
worker, a bisect in which no revision can run. Each with real processes where it can be had.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from harness import atomic
from harness.bisect import search
from harness.model import NEVER_STARTED, NOT_RUN, FailureClass, Outcome, Verdict
from harness.results.junitread import Case
from harness.results.verdict import evaluate
from tests import sim_scenarios
from tests.fixtures import ROOT, assert_one_line_error, cli, read_by_name


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# --------------------------------------------------------------------------- the runner killed by SIGKILL
SPAWN_AND_HANG = '''\
import json, os, subprocess, sys, time

def spawn_and_hang(ctx):
    """What vLLM does under a step: a child in the worker's group, one that left it (setsid)."""
    sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
    child = subprocess.Popen(sleeper)
    escaped = subprocess.Popen(sleeper, start_new_session=True)
    with open(os.path.join(os.path.dirname(__file__), "pids.json.tmp"), "w") as f:
        json.dump({"worker": os.getpid(), "child": child.pid, "escaped": escaped.pid}, f)
    os.replace(os.path.join(os.path.dirname(__file__), "pids.json.tmp"),
               os.path.join(os.path.dirname(__file__), "pids.json"))
    time.sleep(600)
'''


def test_kill_9_of_the_runner_stops_the_worker_and_its_processes(tmp_path):
    (tmp_path / "hook.py").write_text(SPAWN_AND_HANG)
    scenario = tmp_path / "orphaned.yaml"
    scenario.write_text(sim_scenarios.with_profiles(
        "orphaned", 'hanging: {before: [{call: "hook:spawn_and_hang"}], after: [engine_core_shutdown]}',
        "a: {profile: hanging}", ["s1"], step_timeout=600))
    runner = subprocess.Popen([sys.executable, "run.py", str(scenario), "--out", str(tmp_path / "out")], cwd=ROOT,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    pids_file = tmp_path / "pids.json"
    pids: dict[str, int] = {}
    try:
        deadline = time.monotonic() + 120
        while not pids_file.exists():
            assert time.monotonic() < deadline and runner.poll() is None, "the worker never reached its hook"
            time.sleep(0.05)
        pids = json.loads(pids_file.read_text())
        assert all(_alive(p) for p in pids.values())
        os.kill(runner.pid, signal.SIGKILL)  # a real runner, really killed: it can clean up nothing
        runner.wait(timeout=30)
        deadline = time.monotonic() + 30
        while any(_alive(p) for p in pids.values()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert {k: _alive(p) for k, p in pids.items()} == {"worker": False, "child": False, "escaped": False}
    finally:
        for pid in [runner.pid, *pids.values()]:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


WATCHED = textwrap.dedent('''\
    import json, os, subprocess, sys, time
    from harness.worker import lifeline
    lifeline.watch()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print(json.dumps({"worker": os.getpid(), "child": child.pid}), flush=True)
    time.sleep(600)
''')
PARENT = textwrap.dedent('''\
    import os, subprocess, sys
    env = {**os.environ, "HARNESS_LIFELINE_FD": sys.argv[1]}
    subprocess.Popen([sys.executable, "-c", sys.argv[2]], env=env, pass_fds=(int(sys.argv[1]),),
                     start_new_session=True)
    os.read(0, 1)  # until the test kills it
''')


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_parent_death_signal_alone_stops_the_worker_and_its_group(tmp_path):
    """The lifeline pipe cannot report the parent's death here (this test holds its write end too),
    so only PR_SET_PDEATHSIG can: the worker and its child must still go."""
    read_end, write_end = os.pipe()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(read_end), WATCHED], env=env, pass_fds=(read_end,),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
    pids: dict[str, int] = {}
    try:
        pids = json.loads(parent.stdout.readline())
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=30)
        deadline = time.monotonic() + 30
        while any(_alive(p) for p in pids.values()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert {k: _alive(p) for k, p in pids.items()} == {"worker": False, "child": False}
    finally:
        os.close(read_end)
        os.close(write_end)
        for pid in [parent.pid, *pids.values()]:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


# --------------------------------------------------------------------------- a variant that never ran
def _case(name: str, outcome: Outcome, cls: FailureClass = FailureClass.NONE, message: str = "") -> Case:
    return Case("v", "demo", name, outcome, cls, message)


def test_a_candidate_that_never_ran_its_steps_is_not_green():
    """The baseline's first step fails (not for VRAM), the rest reproduce the leak; the candidate's
    interpreter exited before its worker started. That proves nothing about the fix."""
    baseline = [_case("a", Outcome.FAILED, FailureClass.TEARDOWN_ERROR, "MemoryNotFreed: ..."),
                _case("b", Outcome.FAILED, FailureClass.VRAM_CONSTRUCTION, "ValueError: Free memory ..."),
                _case("c", Outcome.FAILED, FailureClass.VRAM_CONSTRUCTION, "ValueError: Free memory ...")]
    never = [_case("a", Outcome.FAILED, FailureClass.CRASH, f"{NEVER_STARTED} (exit code 1)"),
             _case("b", Outcome.SKIPPED, message=f"{NOT_RUN}the worker stopped during step 'a'"),
             _case("c", Outcome.SKIPPED, message=f"{NOT_RUN}the worker stopped during step 'a'")]
    report = evaluate({"base": baseline, "cand": never}, "base", 1)
    assert report.verdict is Verdict.FIX_INSUFFICIENT and report.exit_code == 1
    assert report.unrun == {"cand": 3}
    assert any("never ran here" in r for r in report.reasons)


def test_a_baseline_that_never_ran_cannot_make_the_run_pass():
    never = [_case("a", Outcome.FAILED, FailureClass.CRASH, f"{NEVER_STARTED} (exit code 127)"),
             _case("b", Outcome.SKIPPED, message=f"{NOT_RUN}the worker stopped during step 'a'")]
    clean = [_case("a", Outcome.PASSED), _case("b", Outcome.PASSED)]
    report = evaluate({"base": never, "cand": clean}, "base", 1)
    assert report.verdict in (Verdict.NOT_REPRODUCED, Verdict.BASELINE_BROKEN)  # the words stay true
    assert report.exit_code == 1, "but a run whose baseline never ran must not pass"
    assert report.reasons[0].startswith("variant 'base' did not run 2 of its steps")


@pytest.mark.parametrize("broken", ["with_fix", "without_fix"])
def test_an_interpreter_that_exits_before_the_worker_starts_fails_the_run(tmp_path, broken):
    text = sim_scenarios.bare_vs_fixed("broken_python", 0.0)
    text = text.replace(f"{broken}: {{profile: ", f"{broken}: {{python: /bin/false, profile: ")
    scenario = tmp_path / "broken.yaml"
    scenario.write_text(text)
    proc = cli(str(scenario), "--out", str(tmp_path / "out"), timeout=180)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    summary = json.loads(next((tmp_path / "out" / "broken_python").iterdir()).joinpath("summary.json").read_text())
    assert summary["exit_code"] == 1
    assert any(r.startswith(f"variant '{broken}' did not run 3 of its steps") for r in summary["reasons"])


# --------------------------------------------------------------------------- a full disk
FILLER = '''\
import os

def fill(ctx):
    """Another tenant fills the results disk while this variant tears down."""
    with open(os.path.join(os.environ["FILL_DIR"], "filler"), "ab") as f:
        try:
            while True:
                f.write(b"\\0" * 65536)
                f.flush()
        except OSError:
            pass
'''


@pytest.fixture
def small_disk(tmp_path):
    """A real 2 MiB file system (tmpfs): needs root, or the test is skipped."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_a_disk_that_fills_mid_run_stops_cleanly_and_keeps_what_was_written(tmp_path, small_disk):
    (tmp_path / "filler.py").write_text(FILLER)
    scenario = tmp_path / "diskfull.yaml"
    scenario.write_text(sim_scenarios.with_profiles(
        "diskfull", 'filling: {after: [engine_core_shutdown, {call: "filler:fill"}, gc_collect]}',
        "a: {profile: fixed}, b: {profile: filling}", ["s1", "s2"]))
    out = small_disk / "results"
    proc = cli(str(scenario), "--out", str(out), timeout=180, env={"FILL_DIR": str(small_disk)})
    line = assert_one_line_error(proc, f"error: {small_disk}: disk full (No space left on device)", code=3)
    assert "internal error" not in line and "the run stopped" in line
    run_dir = next((out / "diskfull").iterdir())
    cases = read_by_name(run_dir / "a.xml")
    assert [c.outcome for c in cases.values()] == [Outcome.PASSED, Outcome.PASSED], "the finished variant is kept"
    assert not list(run_dir.rglob(".*.tmp")), "no partial file left"
    # the step the full disk interrupted is no crash of the step: it did not finish, and says why
    assert "not finished: the disk filled up" in proc.stdout and "crash" not in proc.stdout, proc.stdout


def test_the_one_write_path_turns_enospc_into_one_line_and_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "a.json"
    atomic.write_json(path, {"kept": True})

    def full(fd, data):
        os.write(fd, data[:3])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic, "_write_all", full)
    with pytest.raises(atomic.DiskFull) as info:
        atomic.write_json(path, {"kept": False})
    assert info.value.exit_code == 3 and "\n" not in str(info.value)
    assert str(info.value).startswith(f"{atomic.mount_point(tmp_path)}: disk full (No space left on device)")
    assert json.loads(path.read_text()) == {"kept": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


# --------------------------------------------------------------------------- two writers of one file
WRITER = textwrap.dedent('''\
    import sys
    from pathlib import Path
    from harness import atomic
    me = sys.argv[2]
    for i in range(200):
        atomic.write_text(Path(sys.argv[1]), (me * 50_000) + "\\n")
''')


def test_two_processes_writing_one_file_never_write_into_each_others_temporary_file(tmp_path):
    path = tmp_path / "shared.txt"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), me], env=env, stderr=subprocess.PIPE)
               for me in "ab"]
    for w in writers:
        _, err = w.communicate(timeout=120)
        assert w.returncode == 0, err.decode()
    text = path.read_text()
    assert text in ("a" * 50_000 + "\n", "b" * 50_000 + "\n"), "a torn or mixed file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared.txt"], "a temporary file was left"


# --------------------------------------------------------------------------- Ctrl-C while importing
def test_ctrl_c_while_the_harness_imports_exits_130_quietly():
    """SIGINT at moments spread over the whole start-up. Before run.py's first line, CPython's own
    start-up owns the signal (a bare SIGINT death, or CPython's "init_import_site" message); from
    run.py's first line on, the harness must exit 130 without a traceback."""
    start = time.monotonic()
    assert cli("validate", "scenarios/sampler_mi250.yaml").returncode == 0
    span = time.monotonic() - start
    harness_window = 0
    for i in range(24):
        proc = subprocess.Popen([sys.executable, "run.py", "validate", "scenarios/sampler_mi250.yaml"], cwd=ROOT,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(span * (0.3 + 0.7 * i / 24))
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        if proc.returncode == -signal.SIGINT or "init_import_site" in err or "init_sys_streams" in err:
            assert "run.py" not in err and str(ROOT / "harness") not in err, err  # CPython's own start-up
            continue
        if proc.returncode == 0:
            continue  # it finished before the signal
        harness_window += 1
        assert proc.returncode == 130, err
        assert "Traceback" not in err and err.strip() in ("", "interrupted"), err
    assert harness_window, "no signal arrived while the harness ran; the test proved nothing"


# --------------------------------------------------------------------------- bisect without a verdict
def test_a_search_in_which_every_revision_was_skipped_has_no_verdict():
    b = search.Bisection(4)
    while (i := b.next()) is not None:
        b.record(i, search.Behaviour.SKIP)
    assert b.result().status is search.Status.NO_VERDICT


def test_bisect_over_interpreters_that_cannot_run_says_so_and_fails(tmp_path):
    scenario = tmp_path / "s.yaml"
    scenario.write_text(sim_scenarios.bare_vs_fixed("nobisect", 0.0))
    proc = cli("bisect", str(scenario), "--env", "0.1=/nonexistent/a/python", "--env", "0.2=/nonexistent/b/python",
               "--env", "0.3=/nonexistent/c/python", "--out", str(tmp_path / "out"), timeout=180)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "first bad revision" not in proc.stdout
    assert "no verdict: none of the 3 revision(s) tried could be run" in proc.stdout


# --------------------------------------------------------------------------- Ctrl-C at any moment of a run
def test_ctrl_c_at_moments_spread_over_a_run_leaves_every_run_directory_reported(tmp_path):
    """SIGINT from the start of a run to its end: every run directory that exists then has its
    report (report.md says INCOMPLETE when the run was cut short), the exit is 0, 1 or 130 with no
    traceback, and no process of the run is left."""
    scenario = tmp_path / "s.yaml"
    scenario.write_text(sim_scenarios.bare_vs_fixed("ctrlc", 0.05))
    start = time.monotonic()
    assert cli(str(scenario), "--out", str(tmp_path / "full"), timeout=180).returncode == 0
    span = time.monotonic() - start
    reported = 0
    for i in range(12):
        out = tmp_path / f"out{i}"
        proc = subprocess.Popen([sys.executable, "run.py", str(scenario), "--out", str(out)], cwd=ROOT,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(span * (0.2 + 0.8 * i / 12))
        children = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)] if proc.poll() is None else []
        proc.send_signal(signal.SIGINT)
        stdout, err = proc.communicate(timeout=120)
        assert proc.returncode in (0, 1, 130, -signal.SIGINT), stdout + err
        assert "Traceback" not in err and "internal error" not in err, err
        for run_dir in out.glob("ctrlc/*"):
            reported += 1
            assert (run_dir / "summary.json").is_file() and (run_dir / "report.md").is_file(), (i, stdout + err)
            run = json.loads((run_dir / "run.json").read_text())
            if run["incomplete"]:
                assert "INCOMPLETE" in (run_dir / "report.md").read_text()
                assert json.loads((run_dir / "summary.json").read_text())["exit_code"] != 0
        deadline = time.monotonic() + 15
        while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in children if _alive(pid)], "a process of the run outlived it"
    assert reported, "no signal arrived while a run directory existed; the test proved nothing"
