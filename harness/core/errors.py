"""The one exception type the CLI turns into a one-line message and exit code 2, and the one
mechanism that turns a library's error at a boundary (weights, adapters, data files, output
paths, run directories) into it."""

from __future__ import annotations

import contextlib
import pickle
from collections.abc import Callable, Iterator


class UserError(Exception):
    """Bad input from the user (config, data, model path): say what and where, exit 2."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (or its type's name): what a UserError
    quotes from a library's multi-line error."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def boundary_errors() -> tuple[type[BaseException], ...]:
    """What libraries raise for a bad file or folder: I/O, parse and shape errors, a key
    their format lacks, nesting too deep to parse, and safetensors' own error type."""
    found: list[type[BaseException]] = [OSError, ValueError, RuntimeError, KeyError]
    found += [RecursionError, EOFError, pickle.UnpicklingError]  # weights_only refusing code
    with contextlib.suppress(ImportError):
        from safetensors import SafetensorError

        found.append(SafetensorError)
    return tuple(found)


@contextlib.contextmanager
def boundary(what: str, explain: Callable[[BaseException], str] | None = None) -> Iterator[None]:
    """Inside, a library's error about the user's input becomes one UserError line:
    ``explain(exc)``, or ``<what>: <the library's first line>``."""
    try:
        yield
    except UserError:
        raise
    except boundary_errors() as exc:
        raise UserError(explain(exc) if explain else f"{what}: {first_line(exc)}") from None
