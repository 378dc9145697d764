"""The ``medharness`` command. User errors print one line and exit 2."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.config import load_config, parse_config
from harness.errors import UserError
from tasks import TASKS

EXIT_OK, EXIT_GATE_FAILED, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medharness",
        description="Train, evaluate, compare and gate medical LLM fine-tunes.",
        epilog="Exit codes: 0 success, 1 gate failed, 2 bad input or usage.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="train (where asked) and evaluate every model of a config; write runs/<name>/",
        description="Run a YAML config: models with a train: block are fine-tuned first, then "
        "every model is evaluated on every task; results with 95%% CIs, per-sample logs, a "
        "manifest and report.html in <output_dir>/<name>/. Unchanged finished work (samples, "
        "trainings) of an earlier run of the same config is reused.",
    )
    run.add_argument("config", type=Path, help="run config (YAML); see configs/quickstart.yaml")
    run.add_argument(
        "--out",
        type=Path,
        help="parent folder of the run directory "
        "(default: the config's output_dir, relative to the current folder)",
    )
    run.add_argument("--limit", type=positive_int, help="evaluate at most N samples per task")

    train = commands.add_parser(
        "train",
        help="train the models of a config that have a train: block, without evaluating",
        description="Fine-tune every model entry with a train: block (LoRA, QLoRA or full "
        "SFT) into <output_dir>/<name>/train/<model>/: a PEFT adapter (or full weights), the "
        "tokenizer, log.jsonl and train_config.json. A later `medharness run` of the same "
        "config reuses them. Runs under `accelerate launch -m harness.cli train CONFIG` "
        "for several processes or GPUs.",
    )
    train.add_argument("config", type=Path, help="run config (YAML); see configs/lora_medquad.yaml")
    train.add_argument(
        "--out", type=Path, help="parent folder of the run directory (default: output_dir)"
    )

    evaluate = commands.add_parser(
        "eval",
        help="quick look: one model on some tasks, printing a results table",
        description="Evaluate one model on the given tasks and print a table. Writes a run "
        "directory like `run` does.",
    )
    evaluate.add_argument(
        "--model",
        required=True,
        help="smollm2-135m-instruct, fake:SCRIPT, a local path or a hub id",
    )
    evaluate.add_argument("--adapter", help="PEFT adapter (directory or hub id) on --model")
    evaluate.add_argument(
        "--tasks", required=True, type=task_list, help=f"comma-separated, from: {', '.join(TASKS)}"
    )
    evaluate.add_argument("--limit", type=positive_int, help="at most N samples per task")
    evaluate.add_argument(
        "--out",
        type=Path,
        default=Path("runs"),
        help="parent folder of the run directory (default: runs)",
    )
    evaluate.add_argument("--name", help="run directory name (default: eval-<model>)")
    evaluate.add_argument(
        "--batch-size",
        type=batch_size,
        default="auto",
        help="sequences per forward pass, or auto (default): 8 on a CPU, on CUDA what fits",
    )
    evaluate.add_argument(
        "--backend",
        choices=("auto", "hf", "vllm"),
        default="auto",
        help="auto (default): vLLM on a CUDA device when installed, else transformers (hf)",
    )
    evaluate.add_argument(
        "--allow-pickle",
        action="store_true",
        help="also load .bin/.pt weights (pickles can run code)",
    )
    evaluate.add_argument("--max-new-tokens", type=positive_int, default=128)
    evaluate.add_argument("--data-dir", help="dataset root (default: $MEDHARNESS_DATA_DIR)")
    report = commands.add_parser(
        "report",
        help="comparative report of one or more runs (HTML, or Markdown for a .md file)",
        description="Render the models of one or more run directories into one report. The "
        "first model of the first run is the baseline. A .md output is the metrics block of "
        "a model card.",
    )
    report.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run directories")
    report.add_argument(
        "-o", "--output", required=True, type=Path, help="report.html, or a .md file for Markdown"
    )

    gate = commands.add_parser(
        "gate",
        help="check a finished run against a release policy; exit 1 when it fails",
        description="Check RUN_DIR against a policy YAML (floors per task.metric, regression "
        "limits against a baseline with paired tests, required tasks, a minimum sample "
        "count). Reads run directories only. Exit 0 pass, 1 fail, 2 bad input (bad policy, "
        "missing run, run and baseline not comparable). See examples/gate.yaml.",
    )
    gate.add_argument("run", type=Path, metavar="RUN_DIR", help="the candidate's run directory")
    gate.add_argument("--policy", required=True, type=Path, help="policy YAML")
    gate.add_argument(
        "--baseline",
        type=Path,
        metavar="RUN_DIR",
        help="a stored baseline run (default: the run's own first model)",
    )
    gate.add_argument(
        "--junit", type=Path, metavar="FILE", help="write JUnit XML, one case per rule"
    )
    gate.add_argument("--markdown", type=Path, metavar="FILE", help="write a Markdown summary")

    reproduce = commands.add_parser(
        "reproduce",
        help="re-make a model card's experiment and judge each of its claims",
        description="Run a card's recipe (training included where the card trained) with the "
        "card's metrics, then write a verdict per claim (reproduced within tolerance / not "
        "reproduced / not checkable) as verdict.html, verdict.md and verdict.json in the run "
        "directory. Cards are in cards/.",
    )
    reproduce.add_argument("card", type=Path, help="card file, e.g. cards/med-llama-3.2.yaml")
    reproduce.add_argument(
        "--model",
        help="substitute this model for the card's (e.g. smollm2-135m-instruct); the verdict "
        "says so",
    )
    reproduce.add_argument(
        "--budget",
        choices=("card", "small"),
        default="card",
        help="card: the card's recipe and the full test split; small: a few minutes on a CPU "
        "(a few dozen examples and steps), to check the pipeline rather than the numbers",
    )
    reproduce.add_argument(
        "--out", type=Path, default=Path("runs"), help="parent of the run directory (default: runs)"
    )
    reproduce.add_argument("--data-dir", help="dataset root (default: $MEDHARNESS_DATA_DIR)")

    board = commands.add_parser(
        "leaderboard",
        help="one sortable table of every model from many runs",
        description="Every model of the given runs, one row each, columns per task metric, "
        "with provenance and warnings where runs are not comparable.",
    )
    board.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run directories")
    board.add_argument("-o", "--output", required=True, type=Path, help="leaderboard.html")
    return parser


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {value}")
    return value


def batch_size(text: str) -> int | str:
    return "auto" if text == "auto" else positive_int(text)


def task_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in TASKS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown task(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(TASKS)}"
        )
    return names


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:80] or "model"


def command_run(args: argparse.Namespace) -> int:
    from harness.runner import run

    config = load_config(args.config)
    run_dir = run(config, base_dir=Path.cwd(), output_dir=args.out, limit=args.limit)
    print(f"Run written to {run_dir}  (report: {run_dir / 'report.html'})")
    return EXIT_OK


def command_train(args: argparse.Namespace) -> int:
    from harness.runner import train_only

    config = load_config(args.config)
    run_dir = train_only(config, base_dir=Path.cwd(), output_dir=args.out)
    print(f"Trainings written to {run_dir / 'train'}")
    return EXIT_OK


def command_eval(args: argparse.Namespace) -> int:
    import json

    from harness.runner import run

    spec = args.model
    model_name = slug(
        Path(spec.removeprefix("fake:")).stem
        if spec.startswith("fake:")
        else spec.rstrip("/").split("/")[-1]
    )
    config = parse_config(
        {
            "name": args.name or f"eval-{model_name}",
            "models": [
                {
                    "name": model_name,
                    "model": args.model,
                    "adapter": args.adapter,
                    "backend": args.backend,
                    "batch_size": args.batch_size,
                    "allow_pickle": args.allow_pickle,
                }
            ],
            "tasks": args.tasks,
            "limit": args.limit,
            "data_dir": args.data_dir,
            "generation": {"max_new_tokens": args.max_new_tokens},
        },
        "command line",
    )
    run_dir = run(config, base_dir=Path.cwd(), output_dir=args.out)
    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    print(format_table(results["results"]))
    print(f"\nRun written to {run_dir}")
    return EXIT_OK


def format_table(results: dict[str, Any]) -> str:
    lines = [f"{'model':<24} {'task':<16} {'metric':<10} {'value':>9}  {'95% CI':<21} {'n':>5}"]
    for model, tasks in results.items():
        for task, entry in tasks.items():
            for metric, value in entry["metrics"].items():
                low, high = value["ci95"]
                lines.append(
                    f"{model:<24} {task:<16} {metric:<10} {value['value']:>9.4f}  "
                    f"[{low:.4f}, {high:.4f}]{'':<3} {entry['n']:>5}"
                )
    return "\n".join(lines)


def command_report(args: argparse.Namespace) -> int:
    from harness.io import write_text_atomic
    from reports.html import render_markdown, render_report

    markdown = args.output.suffix.lower() in {".md", ".markdown"}
    text = render_markdown(args.runs) if markdown else render_report(args.runs)
    write_text_atomic(args.output, text)
    print(f"Report written to {args.output}")
    return EXIT_OK


def command_leaderboard(args: argparse.Namespace) -> int:
    from harness.io import write_text_atomic
    from reports.leaderboard import render_leaderboard

    write_text_atomic(args.output, render_leaderboard(args.runs))
    print(f"Leaderboard written to {args.output}")
    return EXIT_OK


def command_gate(args: argparse.Namespace) -> int:
    from harness.gate import evaluate_gate, load_policy
    from harness.io import write_text_atomic
    from reports.gate import render_junit, render_markdown, render_text

    result = evaluate_gate(load_policy(args.policy), args.run, args.baseline)
    print(render_text(result))
    if args.junit:
        write_text_atomic(args.junit, render_junit(result))
    if args.markdown:
        write_text_atomic(args.markdown, render_markdown(result))
    return EXIT_OK if result.passed else EXIT_GATE_FAILED


def command_reproduce(args: argparse.Namespace) -> int:
    import json

    import torch

    from harness.cards import judge, load_card, plan_run
    from harness.io import write_text_atomic
    from harness.runner import run
    from reports.verdict import render_verdict_html, render_verdict_markdown

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
    table = judge(card, run_dir, plan.substitutions)
    markdown = render_verdict_markdown(table)
    write_text_atomic(run_dir / "verdict.json", json.dumps(table.to_dict(), indent=2) + "\n")
    write_text_atomic(run_dir / "verdict.md", markdown)
    write_text_atomic(run_dir / "verdict.html", render_verdict_html(table))
    print(markdown)
    print(f"Verdict written to {run_dir / 'verdict.html'} (and verdict.md, verdict.json)")
    return EXIT_OK


COMMANDS = {
    "run": command_run,
    "train": command_train,
    "eval": command_eval,
    "report": command_report,
    "leaderboard": command_leaderboard,
    "gate": command_gate,
    "reproduce": command_reproduce,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except UserError as exc:
        print(f"medharness: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("medharness: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
