"""The ``pytest:`` block of a scenario: vLLM's own test files instead of ``steps:``.

    pytest:
      rootdir: ${VLLM_SRC}      # a vLLM checkout; `--vllm-src DIR` overrides it
      args: [tests/samplers, -k, "not multimodal"]   # what pytest gets, relative to rootdir

``${VAR}`` in ``rootdir`` is expanded when the scenario runs (harness/upstream/planning.py), so a
scenario validates on a machine without the checkout.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

KEYS = ("rootdir", "args")
VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class PytestSuite:
    rootdir: str  # as written, ${VAR} unexpanded
    args: tuple[str, ...] = ()


def parse(ctx: Any, raw: Any) -> PytestSuite:
    """Validate the block with the schema's checker `ctx` (errors name the file and key)."""
    ctx.mapping(raw, "pytest", KEYS, required=("rootdir",))
    rootdir = ctx.text(raw["rootdir"], "pytest.rootdir")
    if not rootdir.strip():
        raise ctx.fail("pytest.rootdir", "must not be empty")
    if "$" in VAR.sub("", rootdir):
        raise ctx.fail("pytest.rootdir", f"{rootdir!r}: write variables as ${{NAME}}")
    args = raw.get("args", [])
    if isinstance(args, str):
        raise ctx.fail("pytest.args", "expected a list of arguments, e.g. [tests/samplers, -k, \"not multimodal\"]")
    ctx.typed(args, "pytest.args", list, "a list of arguments")
    for i, a in enumerate(args):
        ctx.typed(a, f"pytest.args[{i}]", (str, int, float), "a string")
    return PytestSuite(rootdir, tuple(str(a) for a in args))
