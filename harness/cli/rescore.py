"""``medharness rescore RUN``: add judge scores or metrics to a finished run."""

from __future__ import annotations

import argparse
from pathlib import Path

from medharness.cli.common import EXIT_OK, Commands
from medharness.core.rundir import RunDir


def add_parser(commands: Commands) -> None:
    parser = commands.add_parser(
        "rescore",
        help="add judge scores or per-answer metrics to a finished run, without generating",
        description="Grade a finished run's free-text answers with LLM judges (the run's own "
        "judges, or those of --judges FILE) and/or recompute per-answer metrics, then rewrite "
        "its results, manifest and report. The judged models are not loaded. Verdicts are "
        "cached: answers a judge has seen are not judged again.",
    )
    parser.add_argument("run", type=Path, metavar="RUN", help="a finished run directory")
    parser.add_argument(
        "--metrics",
        nargs="+",
        default=[],
        metavar="METRIC",
        help="per-answer metrics to (re)compute, e.g. disclaimer_rate rougeL",
    )
    parser.add_argument(
        "--judges",
        type=Path,
        metavar="FILE",
        help="YAML with judges: (model entries), rubric: and jury: as in a run config "
        "(default: the run's own judges)",
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from medharness.rescore import rescore

    added = rescore(args.run, metrics=args.metrics, judges_file=args.judges, base_dir=Path.cwd())
    print(f"Rescored {args.run} ({', '.join(added)}); report: {RunDir(args.run).report}")
    return EXIT_OK
