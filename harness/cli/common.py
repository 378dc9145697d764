"""What every command shares: exit codes and argument types."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from medharness.config import RunConfig, load_config
from medharness.core.errors import UserError
from medharness.tasks import TASKS
from medharness.tasks.suites import SUITES

EXIT_OK, EXIT_GATE_FAILED, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3

Commands = argparse._SubParsersAction  # what add_parser of each command module receives


def port(text: str) -> int:
    """A TCP port to listen on: 1-65535 (0 would be any free port, which no link could name)."""
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a port is 1-65535, not {value}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {value}")
    return value


def non_empty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a name, got an empty one")
    return text


def batch_size(text: str) -> int | str:
    return "auto" if text == "auto" else positive_int(text)


def task_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in TASKS and name not in SUITES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown task(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(TASKS)}; "
            f"suites: {', '.join(SUITES)}"
        )
    return names


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:80] or "model"


def config_of(args: argparse.Namespace) -> RunConfig:
    """The config file named on the command line, with ``--data-dir`` applied."""
    config = load_config(args.config)
    if args.data_dir:
        config = config.model_copy(update={"data_dir": args.data_dir})
    return config


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        help="dataset root (default: the config's data_dir, else $MEDHARNESS_DATA_DIR)",
    )


def require_data_first(config: RunConfig) -> None:
    """Missing data is refused before a run imports torch and the model libraries (seconds
    to tens of seconds on a busy machine)."""
    from medharness.data import require_data, resolve_data_root

    base = Path.cwd()
    root = resolve_data_root(config.data_dir, base)
    for entry in config.tasks:
        try:
            require_data(entry.task(base), root)
        except UserError as exc:
            raise config.naming_suites(entry.name, exc) from None
