"""LoRA SFT throughput: the medharness recipe vs TRL's SFTTrainer, at equal settings.

Both sides train the built-in SmolLM2-135M-Instruct for one epoch over the same first N
MedQuAD train pairs (chat-formatted, answer-only loss), with the same LoRA settings, learning
rate, per-device batch size, max length, seed and precision (fp32), gradient checkpointing off
and length-grouped batches on both. What differs is the recipe's own code: on a single-process
CPU run its loss sends only the labelled positions through the LM head. ``--trl-defaults``
instead leaves TRL at its own defaults (gradient checkpointing on, random batches; bf16 is
still turned off, this CPU emulates it) to show what a user switching tools would see.

The sides alternate which runs first, ``--repeats`` times each in this one process; the
figures are non-padding tokens per second of ``trainer.train()`` and their medians.

    MEDHARNESS_DATA_DIR=... .venv/bin/python benchmarks/train_throughput.py --examples 8
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any


def trl_trainer(examples: list[dict[str, Any]], source: str, args: argparse.Namespace) -> Any:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import SFTConfig, SFTTrainer

    set_seed(42)
    equal = (
        {}
        if args.trl_defaults
        else {
            "gradient_checkpointing": False,
            "train_sampling_strategy": "group_by_length",
            "seed": 42,
            "data_seed": 42,
        }
    )
    config = SFTConfig(
        output_dir=tempfile.mkdtemp(prefix="trl-bench-"),
        num_train_epochs=1,
        learning_rate=args.learning_rate,
        per_device_train_batch_size=args.batch_size,
        max_length=args.max_length,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        use_cpu=True,
        bf16=False,  # this CPU has no native bf16: emulation would hide everything else
        **equal,
    )
    return SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(source, dtype="float32"),
        args=config,
        train_dataset=Dataset.from_list(examples),
        processing_class=AutoTokenizer.from_pretrained(source),
        peft_config=LoraConfig(
            r=16,
            lora_alpha=32,
            lora_dropout=0.05,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        ),
    )


def trl_side(examples: list[dict[str, Any]], source: str, args: argparse.Namespace) -> tuple:
    trainer = trl_trainer(examples, source, args)
    start = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - start
    return int(trainer._total_train_tokens) / seconds, float(result.training_loss)


def medharness_side(training: Any, source: str, args: argparse.Namespace) -> tuple:
    from medharness.trainers.sft import train
    from medharness.trainers.spec import TrainSpec

    spec = TrainSpec(
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        max_seq_length=args.max_length,
        precision="fp32",
        logging_steps=1,
        save_steps=10_000,  # no checkpoint in a training this short, as TRL's side saves none
    )
    folder = Path(tempfile.mkdtemp(prefix="ours-bench-")) / "run"
    train(spec, base_model=source, adapter=None, training=training, folder=folder, identity={})
    summary = json.loads((folder / "train_config.json").read_text())
    return int(summary["tokens"]) / float(summary["runtime_s"]), float(summary["train_loss"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side")
    parser.add_argument(
        "--trl-defaults",
        action="store_true",
        help="TRL with its own defaults (gradient checkpointing, random batches), bf16 off",
    )
    args = parser.parse_args()

    import torch

    from medharness.data import resolve_data_root
    from medharness.models.builtin import builtin_model_dir
    from medharness.trainers.data import medquad_examples

    source = str(builtin_model_dir())
    training = medquad_examples(resolve_data_root(None, Path.cwd()).path, args.examples, None)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cpus")
    print(f"examples {args.examples}, batch {args.batch_size}, max_length {args.max_length}")
    label = "TRL defaults" if args.trl_defaults else "TRL equal"
    sides = {
        label: lambda: trl_side(training.examples, source, args),
        "medharness": lambda: medharness_side(training, source, args),
    }
    rates: dict[str, list[float]] = {name: [] for name in sides}
    ratios: list[float] = []
    for repeat in range(args.repeats):
        order = list(sides) if repeat % 2 == 0 else list(reversed(sides))
        measured = {}
        for name in order:
            rate, loss = sides[name]()
            measured[name] = rate
            rates[name].append(rate)
            print(f"run {repeat + 1} {name:<12}: {rate:7.1f} tok/s, mean loss {loss:.4f}")
        ratios.append(measured["medharness"] / measured[label])
    for name, values in rates.items():
        print(f"median {name:<12}: {statistics.median(values):7.1f} tok/s")
    print(
        f"ratio medharness / {label}: median {statistics.median(ratios):.2f} "
        f"(runs: {', '.join(f'{r:.2f}' for r in ratios)})"
    )


if __name__ == "__main__":
    main()
