"""Regression harness for vLLM engine-teardown memory leaks."""

__version__ = "0.1.0"

#: Version of the scenario format this release understands.
SCENARIO_VERSION = 1
#: Version of summary.json / history.jsonl records this release writes.
RESULT_VERSION = 1
#: Version of run.json, the run directory's own record, this release writes and reads.
RUN_VERSION = 1
