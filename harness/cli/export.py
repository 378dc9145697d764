"""``medharness export RUN --format lm-eval -o DIR``: a run in another tool's layout."""

from __future__ import annotations

import argparse
from pathlib import Path

from medharness.cli.common import EXIT_OK, Commands


def add_parser(commands: Commands) -> None:
    parser = commands.add_parser(
        "export",
        help="write a run in lm-eval's output layout (results_*.json, samples_*.jsonl)",
        description="Write every model of a run directory as lm-eval writes its --output_path: "
        "DIR/MODEL/results_DATE.json (results, versions, n-shot, configs, task_hashes; metric "
        "keys like acc,none and acc_stderr,none) and DIR/MODEL/samples_TASK_DATE.jsonl, one "
        "line per sample as --log_samples writes it. DIR must not exist yet.",
    )
    parser.add_argument("run", type=Path, metavar="RUN", help="a finished run directory")
    parser.add_argument(
        "--format", choices=["lm-eval"], default="lm-eval", help="the layout (default: lm-eval)"
    )
    parser.add_argument(
        "-o", "--output", required=True, type=Path, metavar="DIR", help="folder to create"
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from medharness.reports.lm_eval_export import export_run

    written = export_run(args.run, args.output)
    print(f"Exported {len(written)} files in lm-eval's layout to {args.output}")
    return EXIT_OK
