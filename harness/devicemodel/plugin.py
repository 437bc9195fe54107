"""vLLM general plugin (entry point ``vllm.general_plugins``) of the modelled device.

vLLM calls `register()` in every process it starts (the caller's, the EngineCore child, each
worker). It does nothing unless the environment names a device model (HARNESS_DEVICE_MODEL, set by
the runner for a variant with `inject: device_model`, or by default in a rehearsal). When it does,
it wraps three methods of vLLM-CPU's `CPUWorker`, the points where a GPU worker touches device
memory while an engine is built (vLLM has no hook there, so a wrap is the only way in):

- `init_device`: vLLM's own startup check (`request_memory`, so the message is vLLM's word for
  word), against the modelled device's free memory, as a GPU worker does it;
- `load_model`: the weights are charged, their real tensors' size;
- `initialize_from_config`: the KV cache is charged, up to `gpu_memory_utilization x total` in
  all, as a GPU's worker sizes it.

Each charge lasts exactly as long as the real tensors it stands for (harness/devicemodel/charges.py).
The wraps call the original first, check the environment again on every call, and `unregister()`
puts the originals back.
"""

from __future__ import annotations

import functools
import gc
import math
import sys
import weakref
from types import SimpleNamespace
from typing import Any, Callable

from harness.devicemodel import charges, settings
from harness.device.probes import physical_ids

WORKER = "vllm.v1.worker.cpu_worker:CPUWorker"
_originals: dict[str, Callable] = {}
_weights: "weakref.WeakKeyDictionary[Any, int]" = weakref.WeakKeyDictionary()  # worker -> bytes charged


def register() -> None:
    """Install the wraps if this process runs under the device model; otherwise do nothing."""
    if settings.from_env() is None or _originals:
        return
    import importlib

    module, _, name = WORKER.partition(":")
    cls = getattr(importlib.import_module(module), name)
    points = (("init_device", _startup_check), ("load_model", _charge_weights),
              ("initialize_from_config", _charge_kv_cache))
    if not all(hasattr(cls, m) for m, _ in points):
        return  # a vLLM the model cannot hook: the runner refused it already (run/engineargs.py)
    for method, after in points:
        _originals[method] = getattr(cls, method)
        setattr(cls, method, _wrap(_originals[method], after))


def unregister() -> None:
    """Put vLLM's methods back (tests; the worker's process simply ends)."""
    if not _originals:
        return
    import importlib

    module, _, name = WORKER.partition(":")
    cls = getattr(importlib.import_module(module), name)
    for method, original in _originals.items():
        setattr(cls, method, original)
    _originals.clear()


def _wrap(original: Callable, after: Callable) -> Callable:
    @functools.wraps(original)
    def wrapper(worker, *args, **kwargs):
        if settings.from_env() is None:
            return original(worker, *args, **kwargs)
        result = original(worker, *args, **kwargs)
        after(worker)
        return result
    return wrapper


# ---------------------------------------------------------------------- the three points
def _device(worker) -> tuple[charges.Charges, str, int]:
    """(charges, ledger device, total bytes) for the device this worker would use on a GPU."""
    model, ledger = settings.from_env()
    own = charges.for_process(ledger, model.ledger_config(), model.release_delay_s)
    device = physical_ids([worker.local_rank])[0]
    return own, device, own.ledger.total(device)


def _requested(worker, total: int) -> int:
    return math.ceil(total * worker.cache_config.gpu_memory_utilization)


def _startup_check(worker) -> None:
    """vLLM's check, after what vLLM's GPU worker does before its snapshot (`gc.collect()`,
    `torch.cuda.empty_cache()`): garbage of an earlier engine in this process is freed first."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
    own, device, total = _device(worker)
    own.flush()  # what the collection freed is written before the reading
    used, _ = own.ledger.read([device])[0]
    snapshot = SimpleNamespace(total_memory=total, free_memory=total - used, device_=f"cuda:{worker.local_rank}")
    from vllm.v1.worker.utils import request_memory  # raises vLLM's own ValueError

    request_memory(snapshot, worker.cache_config)


def _charge_weights(worker) -> None:
    own, device, _ = _device(worker)
    model = worker.model_runner.get_model()
    tensors = [*model.parameters(), *model.buffers()]
    nbytes = _storage_bytes(tensors)
    own.charge(device, nbytes, "weights", tensors)
    _weights[worker] = nbytes


def _charge_kv_cache(worker) -> None:
    """What a GPU worker gives the KV cache: the rest of `gpu_memory_utilization x total`."""
    own, device, total = _device(worker)
    tensors = _kv_tensors(worker.model_runner.kv_caches)
    own.charge(device, max(0, _requested(worker, total) - _weights.get(worker, 0)), "kv_cache", tensors)


def _kv_tensors(kv_caches: Any) -> list:
    """The KV cache tensors, in whatever nesting the model runner keeps them."""
    if isinstance(kv_caches, dict):
        kv_caches = list(kv_caches.values())
    if isinstance(kv_caches, (list, tuple)):
        return [t for item in kv_caches for t in _kv_tensors(item)]
    return [kv_caches] if hasattr(kv_caches, "untyped_storage") else []


def _storage_bytes(tensors: list) -> int:
    """Bytes of the distinct storages (tied weights share one)."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())
