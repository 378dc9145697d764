"""Pickled weight files run code when loaded: refused unless a config allows them."""

from __future__ import annotations

from pathlib import Path

from medharness.core.errors import UserError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def refuse_pickles(folder: Path, what: str, allow_pickle: bool) -> None:
    """A folder whose weights are only pickles is refused unless ``allow_pickle``; with
    safetensors present, loaders read those and never the pickles."""
    if allow_pickle or not folder.is_dir():
        return
    files = [path for path in folder.iterdir() if path.is_file()]
    if any(path.suffix == ".safetensors" for path in files):
        return
    pickles = sorted(path.name for path in files if path.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise UserError(
            f"{what} {folder} holds only pickled weights ({', '.join(pickles)}), which can "
            "run code when loaded; convert them to safetensors, or set allow_pickle: true "
            "for a source you trust"
        )
