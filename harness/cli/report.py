"""``medharness report RUN... -o FILE``: the comparative report."""

from __future__ import annotations

import argparse
from pathlib import Path

from medharness.cli.common import EXIT_OK, Commands
from medharness.core.io import write_text_atomic


def add_parser(commands: Commands) -> None:
    parser = commands.add_parser(
        "report",
        help="comparative report of one or more runs (HTML, or Markdown for a .md file)",
        description="Render the models of one or more run directories into one report. The "
        "first model of the first run is the baseline. A .md output is the metrics block of "
        "a model card.",
    )
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run directories")
    parser.add_argument(
        "-o", "--output", required=True, type=Path, help="report.html, or a .md file for Markdown"
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from medharness.reports.html import render_markdown, render_report

    markdown = args.output.suffix.lower() in {".md", ".markdown"}
    text = render_markdown(args.runs) if markdown else render_report(args.runs)
    write_text_atomic(args.output, text)
    print(f"Report written to {args.output}")
    return EXIT_OK
