"""CI integration: the pytest plugin, GPU pinning, sharding and merging, nightly history."""
