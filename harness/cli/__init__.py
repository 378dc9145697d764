"""The ``medharness`` command: one module per subcommand, each holding its options and its
handler. User errors print one line and exit 2; a failed gate exits 1, and nothing else
does: a bug ends with its traceback and exit 3, so CI never reads it as a failed gate."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from medharness.cli import (
    data,
    export,
    gate,
    grader_check,
    leaderboard,
    plan_gate,
    publish,
    report,
    reproduce,
    rescore,
    run,
    train,
    view,
)
from medharness.cli import eval as eval_command
from medharness.cli.common import EXIT_INTERNAL, EXIT_USAGE
from medharness.core.errors import UserError

SUBCOMMANDS = (
    run,
    train,
    eval_command,
    rescore,
    grader_check,
    report,
    gate,
    plan_gate,
    reproduce,
    leaderboard,
    export,
    publish,
    view,
    data,
)  # --help lists this order


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medharness",
        description="Train, evaluate, compare and gate medical LLM fine-tunes.",
        epilog="Exit codes: 0 success, 1 gate failed, 2 bad input or usage.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
        return code
    except UserError as exc:
        print(f"medharness: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("medharness: interrupted", file=sys.stderr)
        return 130


def entry() -> None:
    """The console script (and ``python -m medharness``): ``main`` with every exit code kept
    to its meaning."""
    try:
        code = main()
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc()
        print(
            "medharness: internal error (exit 3): the traceback above is a bug; "
            "please report it with the command that ran",
            file=sys.stderr,
        )
        code = EXIT_INTERNAL
    sys.exit(code)
