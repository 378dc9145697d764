"""``fake:PATH``: a scripted model (a YAML file of answers and log-likelihoods), for tests and
for trying a config without weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medharness.models.specs import Backend


def check_fake_entry(entry: Any) -> None:
    if entry.train is not None:
        raise ValueError("a fake model cannot be trained")


BACKEND = Backend(
    "fake",
    "medharness.models.fake:load",
    prefix="fake:",
    check=check_fake_entry,
    label=lambda rest: Path(rest).expanduser().stem,
)
