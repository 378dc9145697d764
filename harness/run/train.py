"""``medharness train``: the trainings of a config, in ``<run>/train/``, nothing else."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

from medharness.config import RunConfig
from medharness.core.distributed import is_main_process, released_collectives
from medharness.core.errors import UserError
from medharness.core.folders import exclusive
from medharness.core.io import resolve_inside
from medharness.core.rundir import RunDir
from medharness.data import resolve_data_root
from medharness.run.plan import check_model_entry
from medharness.run.staging import made_by_main_process
from medharness.training import train_models


def train_only(config: RunConfig, *, base_dir: Path, output_dir: Path | None = None) -> Path:
    """Each training folder is complete or absent on its own. A later ``medharness run`` of
    the same config finds them there and evaluates without training again."""
    if not any(entry.train for entry in config.models):
        raise UserError("no model in this config has a train: block; nothing to train")
    data_root = resolve_data_root(config.data_dir, base_dir)
    for entry in config.models:
        check_model_entry(entry)
    out = output_dir or resolve_inside(base_dir, config.output_dir)
    target = out / config.name
    made_by_main_process(target)
    with (
        exclusive(target) if is_main_process() else contextlib.nullcontext(),
        released_collectives(),
    ):
        trained = train_models(config, data_root, target, None)
        run_dir = RunDir(target)
        if trained and run_dir.manifest.is_file():
            recorded = json.loads(run_dir.manifest.read_text(encoding="utf-8")).get("models", {})
            stale = [
                name
                for name, outcome in trained.items()
                if recorded.get(name, {}).get("trained", {}).get("key") != outcome.summary["key"]
            ]
            if stale:  # its results describe trainings that are no longer there
                for path in run_dir.records_and_report:
                    path.unlink(missing_ok=True)
                print(f"{target}: results removed; retrained {', '.join(stale)}", file=sys.stderr)
    return target
