"""The simulated device: a memory ledger shared by every process of a run, and a sampler.

Together with `harness.backends.sim` they behave like an MI250 GCD as far as the teardown-leak bug
is concerned: an engine takes `gpu_memory_utilization x total` at start-up, gives it back only when
it is shut down or garbage-collected, and the memory becomes free lazily (ROCm's reclaim). Standard
library only: this runs in the worker, in whatever interpreter the variant names.
"""

from harness.sim.ledger import ENV, GIB, Ledger, OutOfDeviceMemory
from harness.sim.sampler import EOS_ID, VOCAB, Sampler, SamplingParams

__all__ = ["ENV", "EOS_ID", "GIB", "Ledger", "OutOfDeviceMemory", "Sampler", "SamplingParams", "VOCAB"]
