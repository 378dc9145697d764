"""The hidden staging folder a run is written in: made by the main process of a launch,
kept only where it holds finished work to resume from, renamed into place when whole."""

from __future__ import annotations

import contextlib
import errno
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from medharness.core.distributed import is_main_process
from medharness.core.errors import UserError
from medharness.core.folders import finish, is_ours, make_owned_folder, refuse_foreign
from medharness.core.rundir import RunDir
from medharness.trainers.spec import DONE_FILE


def made_by_main_process(folder: Path, timeout_s: float = 600.0) -> None:
    """The folder a run writes, made and marked by the main process of a launch; the other
    processes wait for its marker. Had every process made it, one could find the folder
    another had just created and not yet marked, and refuse it as not medharness's."""
    if is_main_process():
        make_owned_folder(folder)
        return
    deadline = time.monotonic() + timeout_s
    while not is_ours(folder):
        if time.monotonic() > deadline:
            raise UserError(f"{folder} did not appear: the main process did not make it")
        time.sleep(0.05)


def put_in_place(staging: RunDir, target: Path) -> None:
    """The finished staging folder renamed to ``target``, replacing the run there."""
    if target.exists():
        refuse_foreign(target)
        shutil.rmtree(target)
    finish(staging.path)
    staging.path.rename(target)
    # only now: a kill before the rename must still find which logs are finished
    RunDir(target).state.unlink(missing_ok=True)
    RunDir(target).units.unlink(missing_ok=True)


@contextlib.contextmanager
def resumable(staging: RunDir) -> Iterator[None]:
    """A full disk said in one line; a staging folder left only where it holds finished
    work (sample logs, trainings) for the next attempt to resume from."""
    try:
        yield
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise UserError(
                f"disk full while writing {exc.filename or staging.path}; finished "
                f"samples are kept in {staging.path} for the next attempt"
            ) from None
        raise
    finally:
        worth_keeping = [*staging.samples.rglob("*.jsonl*"), *staging.train.rglob(DONE_FILE)]
        if staging.path.exists() and not worth_keeping and is_main_process():
            shutil.rmtree(staging.path, ignore_errors=True)  # nothing worth resuming
