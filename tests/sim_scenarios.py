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


def bare_vs_fixed(name: str, release_delay_s: float, header: str = "", variants: str = "") -> str:
    """Three quick steps on a simulated MI250 GCD. `bare` keeps the frozen engine, so from the second
    step on every construction fails vLLM's start-up check, whatever the timing; `fixed` gives the
    memory back and waits for it. `header` and `variants` add lines to those sections."""
    return f"""\
version: 1
name: {name}
platform: rocm
backend: sim
{header}sim: {{construct_s: 0.05, release_delay_s: {release_delay_s}}}
timeouts: {{step: 30, worker_start: 30}}
defaults: {{model: facebook/opt-125m, gpu_memory_utilization: 0.9}}
variants:
  without_fix: {{profile: bare}}
  with_fix: {{profile: fixed}}
{variants}baseline: without_fix
steps:
  - name: greedy
    workload: {{prompt_set: short, sampling: [{{temperature: 0.0, max_tokens: 8}}]}}
    expect: [lengths]
  - name: seeded
    workload: {{prompt_set: short, sampling: [{{temperature: 1.0, seed: 1, max_tokens: 8}}]}}
  - name: third
"""


def with_profiles(name: str, profiles: str, variants: str, steps: list[str], step_timeout: float = 30) -> str:
    """A quick simulated scenario with the user's teardown profiles (`call:` hooks, say): `profiles`
    and `variants` are the bodies of those mappings in flow style, `steps` the step names (YAML
    double-quoted, so escapes such as \\t work)."""
    lines = ["version: 1", f"name: {name}", "backend: sim", "sim: {construct_s: 0.0, release_delay_s: 0.0}",
             f"timeouts: {{step: {step_timeout}, worker_start: 120, stop_grace: 2}}",
             "defaults: {gpu_memory_utilization: 0.5}", f"teardown_profiles: {{{profiles}}}",
             f"variants: {{{variants}}}", "steps:"]
    return "\n".join(lines + [f'  - name: "{s}"' for s in steps]) + "\n"
