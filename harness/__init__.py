"""medharness: train, evaluate, compare and gate medical LLM fine-tunes."""

__version__ = "0.1.0"
