"""Where the datasets are: config value, then $MEDHARNESS_DATA_DIR, then the user cache."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from medharness.core.cache import cache_root
from medharness.core.errors import UserError
from medharness.tasks import LoadedData, Task

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
        loaded = task.load(folder)
    except PermissionError as exc:
        raise UserError(f"cannot read data for {task.name}: {exc}") from None
    verify_checksums(folder, task.data_subdir, loaded.file_hashes)
    return loaded


def expected_checksums(folder: Path) -> dict[str, str]:
    """The dataset folder's own SHA256SUMS (``<sha256>  <path>`` lines), if it ships one."""
    sums = folder / "SHA256SUMS"
    if not sums.is_file():
        return {}
    expected = {}
    for line in sums.read_text(encoding="utf-8").splitlines():
        digest, _, name = line.partition("  ")
        if digest and name:
            expected[name.removeprefix("./")] = digest.strip()
    return expected


def verify_checksums(folder: Path, subdir: str, read: dict[str, str]) -> None:
    """Refuse data that differs from the sha256 its folder's SHA256SUMS promises.

    Single files are compared directly; a MedQuAD folder digest is compared with the digest
    of that folder's SHA256SUMS lines in the same layout."""
    expected = expected_checksums(folder)
    if not expected:
        return
    for key, digest in read.items():
        relative = key.removeprefix(f"{subdir}/")
        if relative.endswith(" files)"):  # "<folder>/ (N files)": a folder digest
            name = relative.split("/", 1)[0]
            lines = sorted(
                (path, sha) for path, sha in expected.items() if path.startswith(f"{name}/")
            )
            if not lines:
                continue
            want = hashlib.sha256(
                "".join(f"{sha}  ./{path}\n" for path, sha in lines).encode()
            ).hexdigest()
            if want != digest:
                raise UserError(
                    f"{folder / name}: files differ from {folder / 'SHA256SUMS'} "
                    "(check with: sha256sum -c SHA256SUMS)"
                )
        elif relative in expected and expected[relative] != digest:
            raise UserError(
                f"{folder / relative}: sha256 {digest[:12]}... differs from "
                f"{expected[relative][:12]}... in {folder / 'SHA256SUMS'}"
            )
