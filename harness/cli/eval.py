"""``medharness eval --model SPEC --tasks ...``: a quick look at one model."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from medharness.cli.common import (
    EXIT_OK,
    Commands,
    add_data_dir,
    batch_size,
    non_empty,
    positive_int,
    require_data_first,
    slug,
    task_list,
)
from medharness.config import RunConfig, parse_config
from medharness.core.distributed import is_main_process
from medharness.core.errors import UserError
from medharness.core.records import Manifest, ResultsFile
from medharness.core.rundir import RunDir
from medharness.models.specs import endpoint_model, engine_names, prefixed
from medharness.tasks import TASKS
from medharness.tasks.metrics import is_metric
from medharness.tasks.metrics import metric as metric_of
from medharness.tasks.suites import SUITES


def add_parser(commands: Commands) -> None:
    parser = commands.add_parser(
        "eval",
        help="quick look: one model on some tasks, printing a results table",
        description="Evaluate one model on the given tasks and print a table. Writes a run "
        "directory like `run` does.",
    )
    parser.add_argument(
        "--model",
        required=True,
        help="smollm2-135m-instruct, fake:SCRIPT, openai:NAME (served at --base-url), a local "
        "path or a hub id",
    )
    parser.add_argument(
        "--base-url", help="openai:NAME models: the server's OpenAI-compatible URL, ending in /v1"
    )
    parser.add_argument(
        "--api-key-env",
        metavar="VARIABLE",
        help="openai:NAME models: the environment variable that holds the API key",
    )
    parser.add_argument(
        "--concurrency",
        type=positive_int,
        default=8,
        help="openai:NAME models: requests in flight at once (default: 8)",
    )
    parser.add_argument(
        "--multiple-choice",
        choices=("loglikelihood", "generate", "cot"),
        default="loglikelihood",
        help="score options by likelihood (default, lm-eval's rule), parse the option from "
        "a generated answer (chat models; servers without log-probs), or cot: let the model "
        "reason, then read its 'Final Answer: X' line (instruct and reasoning models)",
    )
    parser.add_argument(
        "--cot-max-new-tokens",
        type=positive_int,
        default=2048,
        help="--multiple-choice cot: tokens for the reasoning and final line (default: 2048)",
    )
    parser.add_argument("--adapter", help="PEFT adapter (directory or hub id) on --model")
    parser.add_argument(
        "--tasks",
        required=True,
        type=task_list,
        help=f"comma-separated, from: {', '.join(TASKS)}; or a suite: {', '.join(SUITES)}",
    )
    parser.add_argument("--limit", type=positive_int, help="at most N samples per task")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("runs"),
        help="parent folder of the run directory (default: runs)",
    )
    parser.add_argument(
        "--name",
        type=non_empty,
        help="run directory name (default: eval-<model>[-with-<adapter>][-<backend>][-<mode>]; "
        "an existing default-named eval of other settings is never replaced)",
    )
    parser.add_argument(
        "--batch-size",
        type=batch_size,
        default="auto",
        help="sequences per forward pass, or auto (default): 8 on a CPU, on CUDA what fits",
    )
    parser.add_argument(
        "--backend",
        choices=engine_names(),
        default="auto",
        help="auto (default): vLLM on a CUDA device when installed, else transformers (hf)",
    )
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="also load .bin/.pt weights (pickles can run code)",
    )
    parser.add_argument("--max-new-tokens", type=positive_int, default=128)
    add_data_dir(parser)
    parser.set_defaults(handler=handle)


def model_name(spec: str) -> str:
    """A run-directory-safe name for a model spec: the script's or folder's last part."""
    found = prefixed(spec)
    named = spec if found is None else found[0].label(found[1])
    return slug(named.rstrip("/").split("/")[-1])


def model_label(args: argparse.Namespace) -> str:
    """The model's name in the run: the model, and the adapter on it where there is one."""
    name = model_name(args.model)
    return f"{name}-with-{model_name(args.adapter)}" if args.adapter else name


def default_run_name(args: argparse.Namespace) -> str:
    """``eval-<label>``, with the backend and the multiple-choice mode where they are not
    the defaults: evals of different things get different folders."""
    parts = [f"eval-{model_label(args)}"]
    if args.backend != "auto":
        parts.append(args.backend)
    if args.multiple_choice != "loglikelihood":
        parts.append(args.multiple_choice)
    return slug("-".join(parts))


def refuse_replacing_another_eval(target: Path, config: RunConfig) -> None:
    """A default-named eval continues or repeats the same eval, and never replaces one made
    with other settings (another adapter, tasks, limit, ...)."""
    try:
        recorded = Manifest.model_validate_json(RunDir(target).manifest.read_bytes()).config
    except (OSError, ValueError):
        return  # nothing finished there (or not a run: the runner refuses that itself)
    if recorded != config.model_dump(mode="json"):
        raise UserError(
            f"{target} holds an eval of other settings (model, adapter, tasks, limit or "
            "options differ): name this one with --name NAME, or remove that folder first"
        )


def endpoint_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The entry's endpoint keys, where --model names a served model."""
    if endpoint_model(args.model) is None:
        return {}
    return {
        "base_url": args.base_url,
        "api_key_env": args.api_key_env,
        "requests": {"concurrency": args.concurrency},
    }


def handle(args: argparse.Namespace) -> int:
    config = parse_config(
        {
            "name": args.name or default_run_name(args),
            "models": [
                {
                    "name": model_label(args),
                    "model": args.model,
                    "adapter": args.adapter,
                    "backend": args.backend,
                    "batch_size": args.batch_size,
                    "allow_pickle": args.allow_pickle,
                    "multiple_choice": args.multiple_choice,
                    **endpoint_settings(args),
                }
            ],
            "tasks": args.tasks,
            "limit": args.limit,
            "data_dir": args.data_dir,
            "generation": {
                "max_new_tokens": args.max_new_tokens,
                "cot_max_new_tokens": args.cot_max_new_tokens,
            },
        },
        "command line",
    )
    if args.name is None:
        refuse_replacing_another_eval(args.out / config.name, config)
    require_data_first(config)
    from medharness.run.runner import run

    run_dir = run(config, base_dir=Path.cwd(), output_dir=args.out)
    if not is_main_process():
        return EXIT_OK  # under a launcher, rank 0 wrote the run and shows it
    results = ResultsFile.model_validate_json(RunDir(run_dir).results.read_bytes())
    print(format_table(results))
    print(f"\nRun written to {run_dir}")
    return EXIT_OK


def format_table(results: ResultsFile) -> str:
    """One row per model, task and metric; every value in points (0-100), as reports show."""
    names: list[tuple[str, str, str]] = []
    figures: list[tuple[float, float, float, int]] = []
    for model, tasks in results.results.items():
        for task, entry in tasks.items():
            for metric, value in entry.metrics.items():
                factor = metric_of(metric).points_factor if is_metric(metric) else 1.0
                low, high = value.ci95
                names.append((model, task, metric))
                figures.append((value.value * factor, low * factor, high * factor, entry.n))
    for model, suites in results.suites.items():
        for suite, outcome in suites.items():
            for metric, value in outcome.metrics.items():
                factor = metric_of(metric).points_factor
                low, high = value.ci95
                names.append((model, f"{suite} (suite)", metric))
                figures.append((value.value * factor, low * factor, high * factor, outcome.n))
    widths = [
        max([len(header)] + [len(row[i]) for row in names]) for i, header in enumerate(HEADERS)
    ]
    lines = [
        "  ".join(h.ljust(w) for h, w in zip(HEADERS, widths, strict=True))
        + f"  {'value':>8}  {'95% CI':<17}  {'n':>5}"
    ]
    for row, (shown, low, high, n) in zip(names, figures, strict=True):
        labels = "  ".join(text.ljust(width) for text, width in zip(row, widths, strict=True))
        interval = f"[{low:.2f}, {high:.2f}]"
        lines.append(f"{labels}  {shown:>8.2f}  {interval:<17}  {n:>5}")
    lines.append("Values in points: accuracy, ROUGE and rates x100; BLEU is 0-100 already.")
    return "\n".join(lines)


HEADERS = ("model", "task", "metric")
