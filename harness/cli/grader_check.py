"""``medharness grader-check healthbench-meta --judges FILE``: a grader's agreement with
physicians on HealthBench's meta-eval file, before trusting it to grade runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from medharness.cli.common import EXIT_OK, Commands

RESAMPLES, SEED = 1000, 1234


def add_parser(commands: Commands) -> None:
    parser = commands.add_parser(
        "grader-check",
        help="a grader's agreement with physicians on HealthBench's meta-eval file",
        description="Grade every completion of HealthBench's meta-eval file against its rubric "
        "item with each judge of --judges FILE (HealthBench's grader prompt; verdicts cached "
        "as a run's are) and print macro F1 against the physicians' labels as simple-evals "
        "computes it (each physician's label a pair with the grader's verdict), with a 95% "
        "bootstrap interval over completions. Items a grader could not be read on are left "
        "out and counted.",
    )
    parser.add_argument("meta", choices=["healthbench-meta"], help="the labelled set")
    parser.add_argument(
        "--judges", required=True, type=Path, metavar="FILE",
        help="YAML with judges: (model entries) and jury: as in a run config",
    )  # fmt: skip
    parser.add_argument(
        "--file", type=Path, metavar="JSONL",
        help="the meta-eval file (default: healthbench/ in the data root)",
    )  # fmt: skip
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from medharness.data import resolve_data_root
    from medharness.grading import grader_agreement
    from medharness.rescore import read_judging
    from medharness.tasks.healthbench import DATA_SUBDIR, FILES, load_meta

    judging = read_judging(args.judges)
    path = (
        args.file
        or resolve_data_root(None, Path.cwd()).path / DATA_SUBDIR / FILES["healthbench_meta"]
    )
    examples = load_meta(path)
    for found in grader_agreement(
        judging.judges, judging.jury.max_new_tokens, examples, resamples=RESAMPLES, seed=SEED
    ):
        low, high = found.ci95
        print(
            f"{found.grader}: macro F1 {found.macro_f1:.3f} (95% CI {low:.3f}-{high:.3f}) "
            f"on {found.items} rubric items, {found.pairs} physician labels; "
            f"{found.unread} items left out (no readable verdict)"
        )
    return EXIT_OK
