"""Deprecation notices about names libraries rename among themselves."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def without_library_renames() -> Iterator[None]:
    """Inside, transformers' FutureWarnings about its own renamed names are not shown
    (``gradient_checkpointing`` became ``activation_checkpointing``; PEFT and TRL still read
    and default the old ones): printed on every training and adapter load, they say nothing
    a user of medharness can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r".*is deprecated and will be removed in v6", category=FutureWarning
        )
        yield
