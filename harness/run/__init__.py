"""Stage 2: plan the run and execute it: runner, worker subprocesses, teardown, probes, faults."""
