"""vLLM general plugin (entry point ``vllm.general_plugins``) of the modelled device."""


def register() -> None:
    """Called by vLLM in every process it starts; does nothing unless a variant asks for the model."""
