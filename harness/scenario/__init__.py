"""Stage 1: load and validate a scenario YAML file into frozen, typed objects."""
