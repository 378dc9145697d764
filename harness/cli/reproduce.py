"""``medharness reproduce CARD``: re-make a model card's experiment, a verdict per claim."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from medharness.cli.common import EXIT_OK, Commands, add_data_dir
from medharness.core.errors import UserError
from medharness.core.io import write_text_atomic


def add_parser(commands: Commands) -> None:
    parser = commands.add_parser(
        "reproduce",
        help="re-make a model card's experiment and judge each of its claims",
        description="Run a card's recipe (training included where the card trained) with the "
        "card's metrics, then write a verdict per claim (reproduced within tolerance / not "
        "reproduced / not checkable) as verdict.html, verdict.md and verdict.json in the run "
        "directory. Cards are in cards/.",
    )
    parser.add_argument("card", type=Path, help="card file, e.g. cards/med-llama-3.2.yaml")
    parser.add_argument(
        "--model",
        help="substitute this model for the card's (e.g. smollm2-135m-instruct); the verdict "
        "says so",
    )
    parser.add_argument(
        "--budget",
        choices=("card", "small"),
        default="card",
        help="card: the card's recipe and the full test split; small: a few minutes on a CPU "
        "(a few dozen examples and steps), to check the pipeline rather than the numbers",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("runs"), help="parent of the run directory (default: runs)"
    )
    add_data_dir(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    import torch

    from medharness.reports.cards import judge, load_card, plan_run
    from medharness.reports.verdict import render_verdict_html, render_verdict_markdown
    from medharness.run.runner import run

    card = load_card(args.card)
    plan = plan_run(card, args.model, args.budget, torch.cuda.is_available())
    config = plan.config
    if args.data_dir:
        config = config.model_copy(update={"data_dir": args.data_dir})
    try:
        run_dir = run(config, base_dir=Path.cwd(), output_dir=args.out)
    except UserError as exc:
        if args.model or "could not load" not in str(exc):
            raise
        raise UserError(
            f"{exc}; to substitute a model that loads here, pass --model "
            "(e.g. --model smollm2-135m-instruct)"
        ) from None
    table = judge(card, run_dir, plan.substitutions, plan.substituted_model)
    markdown = render_verdict_markdown(table)
    write_text_atomic(run_dir / "verdict.json", json.dumps(table.to_dict(), indent=2) + "\n")
    write_text_atomic(run_dir / "verdict.md", markdown)
    write_text_atomic(run_dir / "verdict.html", render_verdict_html(table))
    print(markdown)
    print(f"Verdict written to {run_dir / 'verdict.html'} (and verdict.md, verdict.json)")
    return EXIT_OK
