"""``medharness run CONFIG``: the main job."""

from __future__ import annotations

import argparse
from pathlib import Path

from medharness.cli.common import (
    EXIT_OK,
    Commands,
    add_data_dir,
    config_of,
    positive_int,
    require_data_first,
)
from medharness.config import RunConfig
from medharness.core.distributed import is_main_process
from medharness.core.errors import UserError
from medharness.core.rundir import RunDir


def add_parser(commands: Commands) -> None:
    parser = commands.add_parser(
        "run",
        help="train (where asked) and evaluate every model of a config; write runs/<name>/",
        description="Run a YAML config: models with a train: block are fine-tuned first, then "
        "every model is evaluated on every task; results with 95% CIs, per-sample logs, a "
        "manifest and report.html in <output_dir>/<name>/. Unchanged finished work (samples, "
        "trainings) of an earlier run of the same config is reused.",
    )
    parser.add_argument("config", type=Path, help="run config (YAML); see configs/quickstart.yaml")
    parser.add_argument(
        "--out",
        type=Path,
        help="parent folder of the run directory "
        "(default: the config's output_dir, relative to the current folder)",
    )
    parser.add_argument("--limit", type=positive_int, help="evaluate at most N samples per task")
    parser.add_argument(
        "--executor",
        choices=("local", "ray"),
        help="local: this process (the default); ray: units of (model, task, shard) on a Ray "
        "cluster, each model's workers asking for its resources (needs the [ray] extra)",
    )
    parser.add_argument(
        "--address",
        help="with --executor ray: the cluster (auto, HOST:PORT or ray://HOST:PORT; "
        "default: the config's ray.address, else a Ray started on this machine for the run)",
    )
    add_data_dir(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    config = with_executor(config_of(args), args.executor, args.address)
    require_data_first(config)
    from medharness.run.runner import run

    run_dir = run(config, base_dir=Path.cwd(), output_dir=args.out, limit=args.limit)
    if is_main_process():  # under a launcher, rank 0 wrote the run
        print(f"Run written to {run_dir}  (report: {RunDir(run_dir).report})")
    return EXIT_OK


def with_executor(config: RunConfig, executor: str | None, address: str | None) -> RunConfig:
    """The config with ``--executor`` and ``--address`` applied over its own settings."""
    if executor is not None:
        config = config.model_copy(update={"executor": executor})
    if address is not None:
        if config.executor != "ray":
            raise UserError("--address names a Ray cluster: it needs --executor ray")
        config = config.model_copy(
            update={"ray": config.ray.model_copy(update={"address": address})}
        )
    return config
