"""The one error type of generation: settings or inputs that cannot work."""


class GenerationError(ValueError):
    """Generation settings or prompts that cannot work (one sentence: what and how to fix)."""
