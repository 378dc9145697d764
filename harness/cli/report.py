"""``medharness report RUN... -o FILE``: the comparative report."""

from __future__ import annotations

import argparse
from pathlib import Path

from medharness.cli.common import EXIT_OK, Commands
from medharness.core.errors import UserError
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
    parser.add_argument(
        "--model-index",
        nargs="?",
        const="",
        metavar="MODEL",
        help="Markdown only: begin with the hub's model-index metadata (a model card's YAML "
        "header) for MODEL of the first run (default: its last model)",
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from medharness.reports.html import render_markdown, render_report
    from medharness.reports.model_index import front_matter

    markdown = args.output.suffix.lower() in {".md", ".markdown"}
    if args.model_index is not None and not markdown:
        raise UserError("--model-index goes in a model card: write a .md file with -o")
    text = render_markdown(args.runs) if markdown else render_report(args.runs)
    if args.model_index is not None:
        text = front_matter(args.runs[0], args.model_index or None) + text
    write_text_atomic(args.output, text)
    print(f"Report written to {args.output}")
    return EXIT_OK
