"""Where the datasets are: config value, then $MEDHARNESS_DATA_DIR, then the user cache."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from harness.errors import UserError
from harness.models import cache_root
from tasks import LoadedData, Task

DATA_ENV = "MEDHARNESS_DATA_DIR"
LAYOUT = "medquad/, medqa/, pubmedqa/, medmcqa/"


@dataclass(frozen=True)
class DataRoot:
    path: Path
    origin: str  # how it was chosen, for error messages and the manifest


def resolve_data_root(configured: str | None, relative_to: Path) -> DataRoot:
    if configured:
        path = Path(configured).expanduser()
        return DataRoot(path if path.is_absolute() else relative_to / path, "config data_dir")
    if os.environ.get(DATA_ENV):
        return DataRoot(Path(os.environ[DATA_ENV]).expanduser(), f"${DATA_ENV}")
    return DataRoot(cache_root() / "data", "user cache (no data_dir, no $MEDHARNESS_DATA_DIR)")


def load_task_data(task: Task, root: DataRoot) -> LoadedData:
    folder = root.path / task.data_subdir
    if not folder.is_dir():
        raise UserError(
            f"data for {task.name} not found: {folder} does not exist (data root from "
            f"{root.origin}). Point {DATA_ENV} or data_dir at a folder holding {LAYOUT}. "
            f"{task.obtain_hint}"
        )
    try:
        return task.load(folder)
    except PermissionError as exc:
        raise UserError(f"cannot read data for {task.name}: {exc}") from None
