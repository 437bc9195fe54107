"""`call:` teardown hooks used by the fault scenarios (run inside the worker, like a conftest.py).

- start_engine_child: starts a long-sleeping child in the worker's process group, as vLLM's
  EngineCore and its workers are; the runner must stop it with the group. Its pid, process group
  and the worker's pid go to the file named by HARNESS_FAULT_TEST_PIDS, so the test can check.
- ignore_sigterm: the worker ignores SIGTERM from here on (saying so in its log), like an engine
  stuck in a driver call: only SIGKILL stops it.
"""

import os
import signal
import subprocess
import sys


def start_engine_child(ctx):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    record = os.environ.get("HARNESS_FAULT_TEST_PIDS")
    if record:
        with open(record, "a", encoding="utf-8") as f:
            f.write(f"{child.pid} {os.getpgid(child.pid)} {os.getpid()}\n")


def _say_ignored(signum, frame):
    print("[hook] SIGTERM received and ignored", flush=True)


def ignore_sigterm(ctx):
    signal.signal(signal.SIGTERM, _say_ignored)
