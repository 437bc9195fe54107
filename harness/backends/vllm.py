"""The real vLLM: `vllm.LLM(**engine_args)` on CUDA, ROCm or CPU."""

from __future__ import annotations

import platform as _platform
import sys
from typing import Any

from harness.device import probes
from harness.devicemodel.probe import DeviceModelProbe

#: every probe a worker plan may name (``probe``): the real devices' and the modelled one
PROBES = {**probes.PROBES, DeviceModelProbe.name: DeviceModelProbe}


class VllmBackend:
    name = "vllm"

    def __init__(self, plan: dict[str, Any]):
        import vllm  # imported here: the worker may be another interpreter's vLLM build

        self._vllm = vllm
        self._plan = plan
        self._probe = probes.for_platform(plan["platform"], plan.get("probe"), PROBES)

    def info(self) -> dict[str, Any]:
        torch = sys.modules.get("torch")
        devices = self._plan["devices"]
        return {
            "platform": self._plan["platform"],
            "device_name": self._probe.device_name(devices[0]) if devices else "",
            "vllm_version": getattr(self._vllm, "__version__", "unknown"),
            "torch_version": getattr(torch, "__version__", "unknown") if torch else "unknown",
            "python": _platform.python_version(),
            "probe": self._probe.name,
            "probe_second": getattr(getattr(self._probe, "second", None), "name", ""),
        }

    def probe(self):
        return self._probe

    def construct(self, engine_args: dict[str, Any]):
        return self._vllm.LLM(**engine_args)

    def generate(self, llm, prompts: list[str], sampling: dict[str, Any]) -> list[dict]:
        params = self._vllm.SamplingParams(**sampling)
        outputs = llm.generate(prompts, params, use_tqdm=False)
        return [normalise(o) for o in outputs]

    def cleanup_dist_env(self) -> None:
        from vllm.distributed import cleanup_dist_env_and_memory

        cleanup_dist_env_and_memory()

    def engine_process(self) -> str:
        from harness.device import vllm_engine_process

        return vllm_engine_process()

    def empty_cache(self) -> None:
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()


def normalise(request_output: Any) -> dict:
    """vLLM's RequestOutput -> the plain form expect.py checks (see docs/architecture.md)."""
    comps = []
    for c in request_output.outputs:
        lps = None
        if c.logprobs is not None:
            lps = [{str(tok): [float(lp.logprob), int(lp.rank) if lp.rank is not None else 0]
                    for tok, lp in entry.items()} for entry in c.logprobs]
        comps.append({"token_ids": list(c.token_ids), "text": c.text, "finish_reason": c.finish_reason,
                      "stop_reason": c.stop_reason, "logprobs": lps})
    return {"prompt": request_output.prompt, "completions": comps}
