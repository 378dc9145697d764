"""Folders medharness owns: it replaces or deletes only what carries its marker, creates
staging folders fresh (never through a planted link), and lets one process at a time write
a run.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from medharness.core.errors import UserError
from medharness.core.rundir import LOCK, MARKER, RunDir, refuse_links, staging_path


def is_ours(folder: Path) -> bool:
    """A real folder (not a link) that medharness made: marked, or a finished run's."""
    if folder.is_symlink() or not folder.is_dir():
        return False
    run = RunDir(folder)
    if (folder / MARKER).is_file() or run.state.is_file():  # staging made before the marker
        return True
    try:
        manifest = json.loads(run.manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and "medharness_version" in manifest


def refuse_foreign(folder: Path) -> None:
    """Refuse to work in, replace or delete a path that exists and is not ours."""
    if folder.is_symlink():
        raise UserError(
            f"{folder} is a symbolic link; medharness writes runs only into folders it made"
        )
    if folder.exists() and not is_ours(folder):
        raise UserError(
            f"{folder} exists and is not a medharness run directory; nothing was changed "
            "(choose another run name or --out, or move that folder away)"
        )


def make_owned_folder(folder: Path, unwritable: str | None = None) -> None:
    """Create ``folder`` (or reuse it when ours) and mark it as medharness's. Where it cannot
    be written the error says so, in ``unwritable``'s words (``{reason}`` filled in)."""
    refuse_foreign(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        marker = folder / MARKER
        if not marker.is_file():
            marker.write_text(json.dumps({"made_by": "medharness"}) + "\n", encoding="utf-8")
    except OSError as exc:
        words = unwritable or f"cannot write the run directory under {folder.parent}: {{reason}}"
        raise UserError(words.format(reason=exc.strerror)) from None


@contextlib.contextmanager
def exclusive(folder: Path) -> Iterator[None]:
    """Hold a lock inside ``folder`` (ours) while this process writes it; a second process on
    the same output is refused in one line instead of interleaving its writes. The lock file
    goes when the lock does, so the finished folder holds only what the run wrote."""
    lock_path = folder / LOCK
    try:
        handle = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise UserError(f"cannot write the run directory {folder}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"another medharness process is writing {folder} now; wait for it to finish "
                "or use another run name or --out"
            ) from None
        yield
    finally:
        lock_path.unlink(missing_ok=True)  # a second process is refused, never waiting on it
        os.close(handle)


def finish(folder: Path) -> None:
    """Before a finished run takes its final name: no lock file and no marker in it; its
    manifest marks it from then on."""
    (folder / LOCK).unlink(missing_ok=True)
    (folder / MARKER).unlink(missing_ok=True)


@contextlib.contextmanager
def whole_or_absent(target: Path) -> Iterator[Path]:
    """A new folder that appears at ``target`` complete or not at all: the block writes into a
    hidden sibling, renamed into place when the block ends; an existing ``target`` is refused."""
    if target.exists() or target.is_symlink():
        raise UserError(f"{target} already exists; choose a new folder")
    staging = staging_path(target)
    if staging.exists() or staging.is_symlink():
        refuse_foreign(staging)  # a folder of that name not made by medharness stays
        shutil.rmtree(staging)
    try:
        make_owned_folder(staging)
        yield staging
        (staging / MARKER).unlink()
        staging.rename(target)
    except OSError as exc:
        remove_ours(staging)
        raise UserError(f"cannot write {target}: {exc.strerror or exc}") from None
    except BaseException:
        remove_ours(staging)
        raise


def remove_ours(folder: Path) -> None:
    """Delete ``folder`` where it is medharness's (marked, not a link); leave anything else."""
    if is_ours(folder):
        shutil.rmtree(folder, ignore_errors=True)


def copy_plain_tree(source: Path, target: Path) -> None:
    """Copy a folder of a run, refusing any symbolic link in it instead of following it."""
    refuse_links(source.parent, source)
    for folder, folders, files in os.walk(source):
        here = Path(folder)
        for name in [*folders, *files]:
            refuse_links(source, here / name)
        (target / here.relative_to(source)).mkdir(parents=True, exist_ok=True)
        for name in files:
            shutil.copy2(here / name, target / here.relative_to(source) / name)
