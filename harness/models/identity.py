"""What a model spec's answers depend on, known before the model is loaded."""

from __future__ import annotations

from pathlib import Path

from medharness.core.cache import weights_sha256
from medharness.core.io import sha256_file
from medharness.models.builtin import builtin_model_dir
from medharness.models.specs import BUILTIN_MODEL, fake_script


def weights_identity(spec: str) -> str | None:
    """sha256 of the weights a spec names, where they are local files (cached by mtime);
    None for hub ids, whose revision is only known once loaded."""
    script = fake_script(spec)
    if script is not None:
        return sha256_file(script) if script.is_file() else None
    folder = builtin_model_dir() if spec == BUILTIN_MODEL else Path(spec).expanduser()
    return weights_sha256(folder) if folder.is_dir() else None
