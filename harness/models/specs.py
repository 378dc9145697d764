"""Model specs as users write them: the one place that tells the kinds apart.

A spec is one of ``smollm2-135m-instruct`` (the built-in model), ``fake:PATH`` (a scripted
model), a local directory, or a hub id.
"""

from __future__ import annotations

import os
from pathlib import Path

BUILTIN_MODEL = "smollm2-135m-instruct"
FAKE_PREFIX = "fake:"


def fake_script(spec: str) -> Path | None:
    """The script path of a ``fake:PATH`` spec; None for any other spec."""
    if not spec.startswith(FAKE_PREFIX):
        return None
    return Path(spec[len(FAKE_PREFIX) :]).expanduser()


def looks_like_path(spec: str) -> bool:
    """Whether a spec that names no existing folder was meant as a path, not a hub id."""
    return spec.startswith(("/", ".", "~")) or spec.count("/") > 1 or os.sep in spec[:1]


def is_hub_id(spec: str) -> bool:
    """A spec that names a hub repository: not built in, not fake, not a local folder."""
    return (
        spec != BUILTIN_MODEL
        and fake_script(spec) is None
        and not looks_like_path(spec)
        and not Path(spec).expanduser().exists()
    )
