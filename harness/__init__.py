"""medharness: train, evaluate, compare and gate medical LLM fine-tunes.

The package's layers and what each may import are described once, in the README's Layout
section (checked against pyproject.toml's import contracts by tests/test_layers.py).
"""

from importlib.metadata import PackageNotFoundError, version

DISTRIBUTION = "medharness-eval"

try:
    __version__ = version(DISTRIBUTION)
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
