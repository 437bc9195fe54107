"""The ``pytest:`` block of a scenario: vLLM's own test files instead of ``steps:``, and what only
such a scenario's variants may have (a checkout of their own, the ``native`` profile).

    pytest:
      rootdir: ${VLLM_SRC}      # a vLLM checkout; `--vllm-src DIR` overrides it
      args: [tests/samplers, -k, "not multimodal"]   # what pytest gets, relative to rootdir
    variants:
      pr_base: {profile: native, ref: ${PR_BASE}}    # a git revision of rootdir's repository
      mine: {profile: native, rootdir: ~/src/vllm-mine}

``${VAR}`` in ``rootdir`` and ``ref`` is expanded when the scenario runs (harness/upstream/planning.py),
so a scenario validates on a machine without the checkout.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

KEYS = ("rootdir", "args")
#: a variant's own checkout; only a pytest suite has one
CHECKOUT_KEYS = ("ref", "rootdir")
#: the profile that keeps the checkout's own teardown; only a pytest suite has one
NATIVE = "native"
VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class PytestSuite:
    rootdir: str  # as written, ${VAR} unexpanded
    args: tuple[str, ...] = ()


def parse(ctx: Any, raw: Any) -> PytestSuite:
    """Validate the block with the schema's checker `ctx` (errors name the file and key)."""
    ctx.mapping(raw, "pytest", KEYS, required=("rootdir",))
    rootdir = _with_vars(ctx, raw["rootdir"], "pytest.rootdir")
    args = raw.get("args", [])
    if isinstance(args, str):
        raise ctx.fail("pytest.args", "expected a list of arguments, e.g. [tests/samplers, -k, \"not multimodal\"]")
    ctx.typed(args, "pytest.args", list, "a list of arguments")
    for i, a in enumerate(args):
        ctx.typed(a, f"pytest.args[{i}]", (str, int, float), "a string")
    return PytestSuite(rootdir, tuple(str(a) for a in args))


def _with_vars(ctx: Any, value: Any, key: str) -> str:
    text = ctx.text(value, key)
    if not text.strip():
        raise ctx.fail(key, "must not be empty")
    if "$" in VAR.sub("", text):
        raise ctx.fail(key, f"{text!r}: write variables as ${{NAME}}")
    return text


def variant_checkout(ctx: Any, body: dict, key: str) -> dict[str, str | None]:
    """A variant's ``ref:`` and ``rootdir:``, as written (``${VAR}`` unexpanded)."""
    return {k: _with_vars(ctx, body[k], f"{key}.{k}") if k in body else None for k in CHECKOUT_KEYS}


def check_variants(ctx: Any, variants: tuple) -> None:
    """A steps scenario has no checkout and no upstream teardown to keep: refuse what needs one."""
    for v in variants:
        for k in CHECKOUT_KEYS:
            if getattr(v, k) is not None:
                raise ctx.fail(f"variants.{v.name}.{k}", "only a pytest suite (a 'pytest:' block) has a "
                                                          "checkout; a steps scenario's engines come from its steps")
        if v.profile == NATIVE:
            raise ctx.fail(f"variants.{v.name}.profile", f"'{NATIVE}' keeps the teardown of a pytest suite's "
                                                          "own checkout; a steps scenario has none (use bare, "
                                                          "legacy, fixed or settle)")
