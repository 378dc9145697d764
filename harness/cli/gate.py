"""``medharness gate RUN --policy FILE``: the release gate; exit 1 when a rule blocks."""

from __future__ import annotations

import argparse
from pathlib import Path

from medharness.cli.common import EXIT_GATE_FAILED, EXIT_OK, Commands
from medharness.core.io import write_text_atomic


def add_parser(commands: Commands) -> None:
    parser = commands.add_parser(
        "gate",
        help="check a finished run against a release policy; exit 1 when a rule blocks",
        description="Judge RUN_DIR against a policy YAML: per task.metric, non-inferiority "
        "margins against a baseline (max_drop, max_relative_drop) and floors, each on its "
        "95% interval, giving PASS, FAIL, INCONCLUSIVE or MISSING; tiers say which verdicts "
        "block. Reads run directories only. Exit 0 pass, 1 blocked, 2 bad input (bad policy, "
        "missing run, run and baseline not comparable). See examples/gate.yaml.",
    )
    parser.add_argument("run", type=Path, metavar="RUN_DIR", help="the candidate's run directory")
    parser.add_argument("--policy", required=True, type=Path, help="policy YAML")
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="RUN_DIR",
        help="a stored baseline run (default: the run's own first model)",
    )
    parser.add_argument(
        "--junit", type=Path, metavar="FILE", help="write JUnit XML, one case per rule"
    )
    parser.add_argument("--markdown", type=Path, metavar="FILE", help="write a Markdown summary")
    parser.add_argument(
        "--json", type=Path, metavar="FILE", help="write every rule's verdict and evidence"
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from medharness.reports.gate import evaluate_gate, load_policy
    from medharness.reports.gate_output import (
        render_json,
        render_junit,
        render_markdown,
        render_text,
    )

    result = evaluate_gate(load_policy(args.policy), args.run, args.baseline)
    print(render_text(result))
    if args.junit:
        write_text_atomic(args.junit, render_junit(result))
    if args.markdown:
        write_text_atomic(args.markdown, render_markdown(result))
    if args.json:
        write_text_atomic(args.json, render_json(result))
    return EXIT_OK if result.passed else EXIT_GATE_FAILED
