"""The worker's library, inside the worker process: the event stream and the log it writes
(`stream`), the steps it runs (`steps`), the teardown actions (`teardown`), the checks on the
outputs (`expect`), injected faults (`faults`) and its lifeline to the runner (`lifeline`).

Standard library only, so any interpreter with vLLM can run it; the entry point is
harness/run/worker.py.
"""
