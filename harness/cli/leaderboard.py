"""``medharness leaderboard RUN... -o FILE``: every model of many runs in one table."""

from __future__ import annotations

import argparse
from pathlib import Path

from medharness.cli.common import EXIT_OK, Commands
from medharness.core.io import write_text_atomic


def add_parser(commands: Commands) -> None:
    parser = commands.add_parser(
        "leaderboard",
        help="one sortable table of every model from many runs",
        description="Every model of the given runs, one row each, columns per task metric, "
        "with provenance and warnings where runs are not comparable.",
    )
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run directories")
    parser.add_argument("-o", "--output", required=True, type=Path, help="leaderboard.html")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from medharness.reports.leaderboard import render_leaderboard

    write_text_atomic(args.output, render_leaderboard(args.runs))
    print(f"Leaderboard written to {args.output}")
    return EXIT_OK
