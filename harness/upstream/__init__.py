"""vLLM's own pytest files as a scenario (a ``pytest:`` block instead of ``steps:``).

Runner side: `planning` (the rootdir, the substitutions, the worker plan's ``pytest`` section) and
`results` (the worker's events into one case per test, collection errors into one clear line).
Worker side, in the variant's interpreter: `suite` runs one ``pytest.main`` session in the rootdir
with `plugin` loaded, which injects the variant's teardown profile into upstream's ``VllmRunner``
and ``HfRunner`` (`patches`) and records every engine build; `hfhome` seeds the private model cache.
"""
