"""Scenario texts for tests that need a quick run on the simulated MI250."""

from __future__ import annotations


def lazy_release(name: str, steps: list[str], fixed_profile: str = "fixed", release_delay_s: float = 0.3) -> str:
    """Greedy steps on a simulated MI250 GCD with a short lazy release: `without_fix` (legacy) fails
    from the second engine on; `with_fix` passes when its profile waits the memory out."""
    text = f"""\
version: 1
name: {name}
description: {len(steps)} steps on a simulated MI250 with a short lazy release
platform: rocm
backend: sim
sim: {{total_gib: 64, baseline_gib: 0.5, weights_gib: 1.0, release_delay_s: {release_delay_s}, construct_s: 0.05}}
timeouts: {{step: 30, worker_start: 30}}
defaults: {{model: facebook/opt-125m, gpu_memory_utilization: 0.92}}
variants:
  without_fix: {{profile: legacy}}
  with_fix: {{profile: {fixed_profile}}}
baseline: without_fix
steps:
"""
    for step in steps:
        text += (f"  - name: {step}\n"
                 "    workload: {prompt_set: short, sampling: [{temperature: 0.0, max_tokens: 8}]}\n"
                 "    expect: [lengths]\n")
    return text
