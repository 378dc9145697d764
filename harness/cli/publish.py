"""``medharness publish RUN --hub ORG/NAME``: a run as a hub dataset revision."""

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
        help="upload a run (results, samples, report) to the hub as a dataset",
        description="Upload RUN as one commit of the hub dataset ORG/NAME (made if missing): "
        "results.json, manifest.json, inputs/, samples/, report.html and training logs (no "
        "weights), with a dataset card that opens each sample log in the hub's viewer. The "
        "token is the hub library's own (HF_TOKEN, or `hf auth login`); it is never written. "
        "For a model card's model-index, see `medharness report RUN -o card.md --model-index`.",
    )
    parser.add_argument("run", type=Path, metavar="RUN", help="a finished run directory")
    parser.add_argument("--hub", required=True, metavar="ORG/NAME", help="the dataset repository")
    parser.add_argument("--private", action="store_true", help="make the repository private")
    parser.add_argument(
        "--folder",
        type=Path,
        metavar="DIR",
        help="write the upload's folder here and keep it (default: a temporary folder)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="write --folder only; upload nothing"
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
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
            return EXIT_OK
        revision = upload(folder, args.hub, args.private, message)
    else:
        with tempfile.TemporaryDirectory(prefix="medharness-publish-") as temporary:
            folder = publish_folder(args.run, Path(temporary) / args.run.name)
            revision = upload(folder, args.hub, args.private, message)
    print(f"Published {args.run} to the hub dataset {args.hub} at revision {revision}")
    return EXIT_OK
