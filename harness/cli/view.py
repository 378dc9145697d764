"""``medharness view RUN... [--playground]``: browse samples in a local web app."""

from __future__ import annotations

import argparse
from pathlib import Path

from medharness.cli.common import EXIT_OK, Commands, port


def add_parser(commands: Commands) -> None:
    parser = commands.add_parser(
        "view",
        help="browse the samples of runs in a local web app (and ask their models questions)",
        description="Serve a local web app over one or more run directories (or lm-eval "
        "--log_samples folders): filter samples by task, outcome (models disagree, a model "
        "right or wrong), metadata (qtype, source), sort them by the largest per-sample "
        "difference between models, and read the answers side by side with the reference, "
        "per-sample metrics and judge rationales. A filtered view is a link: "
        "/?task=medqa_4opt&show=models+disagree. Reads run directories only; with "
        "--playground a second tab puts your question to every model of the first run as "
        "the run evaluated it, loading them on the first question. Needs the [view] extra.",
    )
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run directories")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=port, default=7860, help="port to listen on (7860)")
    parser.add_argument(
        "--playground",
        action="store_true",
        help="add the playground tab over the first run's model entries",
    )
    parser.add_argument(
        "--endpoint",
        action="append",
        default=[],
        metavar="URL",
        help="with --playground: a server of the run's openai: models that may get your API "
        "key (repeat for several); one only the run folder names never does",
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from medharness.reports.view_app import serve
    from medharness.reports.viewer import Viewer

    viewer = Viewer.open(args.runs)
    playground = None
    if args.playground:
        from medharness.playground import Playground

        playground = Playground.of_run(args.runs[0], args.endpoint)
    serve(viewer, args.host, args.port, playground)
    return EXIT_OK
