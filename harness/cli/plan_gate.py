"""``medharness plan-gate --policy FILE --baseline RUN``: size a candidate run before making it."""

from __future__ import annotations

import argparse
from pathlib import Path

from medharness.cli.common import EXIT_OK, Commands


def add_parser(commands: Commands) -> None:
    parser = commands.add_parser(
        "plan-gate",
        help="how many questions a candidate run needs to pass each rule of a gate policy",
        description="For each rule of a gate policy, the number of questions a candidate run "
        "needs so that a candidate truly as good as the baseline passes it with 80% power, at "
        "the baseline run's observed per-question spread (differences taken as between "
        "independent answers, which errs towards larger runs). Reads the baseline run only.",
    )
    parser.add_argument("--policy", required=True, type=Path, help="policy YAML")
    parser.add_argument(
        "--baseline",
        required=True,
        type=Path,
        metavar="RUN_DIR",
        help="a finished run of the baseline model (the policy's baseline, else its first)",
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from medharness.reports.gate import load_policy
    from medharness.reports.gate_plan import plan_gate, render_plan

    model, plans = plan_gate(load_policy(args.policy), args.baseline)
    print(render_plan(model, args.baseline, plans))
    return EXIT_OK
