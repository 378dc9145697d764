"""``medharness train CONFIG``: only the trainings of a config."""

from __future__ import annotations

import argparse
from pathlib import Path

from medharness.cli.common import EXIT_OK, Commands, add_data_dir, config_of


def add_parser(commands: Commands) -> None:
    parser = commands.add_parser(
        "train",
        help="train the models of a config that have a train: block, without evaluating",
        description="Fine-tune every model entry with a train: block (LoRA, QLoRA or full "
        "SFT) into <output_dir>/<name>/train/<model>/: a PEFT adapter (or full weights), the "
        "tokenizer, log.jsonl and train_config.json. A later `medharness run` of the same "
        "config reuses them. Runs under `accelerate launch -m medharness train CONFIG` "
        "for several processes or GPUs.",
    )
    parser.add_argument(
        "config", type=Path, help="run config (YAML); see configs/lora_medquad.yaml"
    )
    parser.add_argument(
        "--out", type=Path, help="parent folder of the run directory (default: output_dir)"
    )
    add_data_dir(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from medharness.run.train import train_only

    config = config_of(args)
    run_dir = train_only(config, base_dir=Path.cwd(), output_dir=args.out)
    print(f"Trainings written to {run_dir / 'train'}")
    return EXIT_OK
