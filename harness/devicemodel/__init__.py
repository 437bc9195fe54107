"""The modelled device: real vLLM-CPU engines with a GPU's memory accounting modelled under them."""
