"""medharness: train, evaluate, compare and gate medical LLM fine-tunes.

Layers, each importing only those below it (checked by ``make lint``): ``core`` (errors,
atomic I/O, typed records) <- ``tasks`` (benchmarks and metrics) <- ``trainers`` <-
``models`` <- ``config`` / ``data`` <- ``reports`` (never ``models``) <- ``evaluate`` <-
``training`` <- ``runner`` <- ``cli``.
"""

from importlib.metadata import PackageNotFoundError, version

DISTRIBUTION = "medharness-eval"

try:
    __version__ = version(DISTRIBUTION)
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
