"""``medharness publish RUN --hub ORG/NAME --wandb PROJECT``: a run shared on the hub (a
dataset revision) and on W&B (a run with tables and an artifact)."""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

from medharness.cli.common import EXIT_OK, Commands
from medharness.core.errors import UserError

REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


def add_parser(commands: Commands) -> None:
    parser = commands.add_parser(
        "publish",
        help="share a run: a hub dataset (results, samples, report) and/or a W&B run",
        description="--hub: upload RUN as one commit of the hub dataset ORG/NAME (made if "
        "missing): results.json, manifest.json, inputs/, samples/, report.html and training "
        "logs (no weights), with a dataset card that opens each sample log in the hub's "
        "viewer. --wandb: log each metric and its interval to a W&B run's summary, a table of "
        "samples per model and task, and the run's records and report as an artifact "
        "(WANDB_MODE=offline logs without a network). Tokens are the libraries' own (HF_TOKEN, "
        "WANDB_API_KEY or their logins); medharness never writes one. For a model card's "
        "model-index, see `medharness report RUN -o card.md --model-index`.",
    )
    parser.add_argument("run", type=Path, metavar="RUN", help="a finished run directory")
    parser.add_argument("--hub", metavar="ORG/NAME", help="the hub dataset repository")
    parser.add_argument("--wandb", metavar="PROJECT", help="the W&B project")
    parser.add_argument("--wandb-entity", metavar="ENTITY", help="the W&B team or user")
    parser.add_argument("--private", action="store_true", help="make the repository private")
    parser.add_argument(
        "--folder",
        type=Path,
        metavar="DIR",
        help="write the upload's folder here and keep it (default: a temporary folder)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="write --folder only; upload and log nothing"
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    if args.hub is None and args.wandb is None:
        raise UserError("say where to publish: --hub ORG/NAME, --wandb PROJECT, or both")
    if args.hub is not None:
        to_hub(args)
    if args.wandb is not None and not args.dry_run:
        from medharness.reports.runs import RunData
        from medharness.reports.wandb_log import log_run

        path = log_run(RunData.open(args.run), args.wandb, args.wandb_entity)
        print(f"Logged {args.run} to W&B as {path}")
    return EXIT_OK


def to_hub(args: argparse.Namespace) -> None:
    from medharness.reports.publish import publish_folder, upload

    if not REPO_ID.fullmatch(args.hub):
        raise UserError(f"--hub {args.hub!r}: expected ORG/NAME")
    if args.dry_run and args.folder is None:
        raise UserError("--dry-run writes the folder only: give it with --folder DIR")
    message = f"medharness run {args.run.name}"
    if args.folder is not None:
        folder = publish_folder(args.run, args.folder)
        if args.dry_run:
            print(f"Upload folder written to {folder}; nothing was uploaded")
            return
        revision = upload(folder, args.hub, args.private, message)
    else:
        with tempfile.TemporaryDirectory(prefix="medharness-publish-") as temporary:
            folder = publish_folder(args.run, Path(temporary) / args.run.name)
            revision = upload(folder, args.hub, args.private, message)
    print(f"Published {args.run} to the hub dataset {args.hub} at revision {revision}")
