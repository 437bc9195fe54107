"""NVLink multicast stays off in every environment the harness builds for a worker.

NCCL's NVLink SHARP (NVLS), torch's symmetric-memory multicast and NVSHMEM's NVLS map multicast
objects across the GPUs of a node. A process that dies holding them (which is what this harness
provokes: killed workers, hung teardowns) can leave a shared host's GPUs out of service until the
node is reset. Nothing the harness measures needs multicast, so it is off, with no opt-out:

- a variant's `env:` that sets one of these variables to another value is refused when the
  scenario is loaded (exit 2, naming the file and the key);
- a value in the caller's environment is overridden, and the plan records the change as a
  substitution (printed first, kept in the JUnit and the report).

Standard library only.
"""

from __future__ import annotations

from typing import Mapping

MULTICAST_OFF: dict[str, str] = {
    "NCCL_NVLS_ENABLE": "0",
    "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
    "NVSHMEM_DISABLE_NVLS": "1",
}

REASON = "NVLink multicast stays off: it can put a shared host's GPUs out of service"


def conflicts(env: Mapping[str, str]) -> dict[str, str]:
    """The variables of ``env`` that would turn multicast on (any value but the one that keeps it off)."""
    return {k: str(env[k]) for k, off in MULTICAST_OFF.items() if k in env and str(env[k]).strip() != off}


def keep_off(env: dict[str, str]) -> dict[str, str]:
    """``env`` with multicast off, whatever it said before (applied last, so nothing overrides it)."""
    env.update(MULTICAST_OFF)
    return env
