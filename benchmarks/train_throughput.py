"""LoRA SFT throughput: the medharness recipe vs TRL's SFTTrainer with its defaults.

Both sides train the built-in SmolLM2-135M-Instruct for one epoch over the same first N
MedQuAD train pairs (chat-formatted, answer-only loss), with the same LoRA settings,
learning rate, per-device batch size and max length; everything else is each side's
default (TRL: gradient checkpointing on, bf16 autocast, random batches; medharness: no
checkpointing on a model this small, fp32 on a CPU, length-grouped batches). On a CPU the
TRL side also needs ``use_cpu=True``: its bf16 default refuses to start without it. Prints
non-padding tokens per second of training, the ratio, and the mean training loss of each.

    MEDHARNESS_DATA_DIR=... .venv/bin/python benchmarks/train_throughput.py --examples 48
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any


def trl_defaults(
    examples: list[dict[str, Any]], source: str, args: argparse.Namespace, bf16: bool
) -> Any:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import SFTConfig, SFTTrainer

    set_seed(42)
    config = SFTConfig(
        output_dir=tempfile.mkdtemp(prefix="trl-bench-"),
        num_train_epochs=1,
        learning_rate=args.learning_rate,
        per_device_train_batch_size=args.batch_size,
        max_length=args.max_length,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        use_cpu=not torch.cuda.is_available(),  # TRL's bf16 default refuses a CPU without it
        **({} if bf16 else {"bf16": False}),
    )
    return SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(source),
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


def timed_train(trainer: Any) -> tuple[float, int, float]:
    start = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - start
    return seconds, int(trainer._total_train_tokens), float(result.training_loss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument(
        "--trl-fp32",
        action="store_true",
        help="TRL side with bf16=False (its only change from the defaults): on a CPU without "
        "bf16 support, emulated bf16 dominates the time and hides everything else",
    )
    args = parser.parse_args()

    import torch

    from medharness.data import resolve_data_root
    from medharness.models.builtin import builtin_model_dir
    from medharness.trainers.data import medquad_examples
    from medharness.trainers.sft import train
    from medharness.trainers.spec import TrainSpec

    source = str(builtin_model_dir())
    root = resolve_data_root(None, Path.cwd()).path
    training = medquad_examples(root, args.examples, None)
    spec = TrainSpec(
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        max_seq_length=args.max_length,
        logging_steps=1,
    )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cpus")

    theirs_s, theirs_tokens, theirs_loss = timed_train(
        trl_defaults(training.examples, source, args, bf16=not args.trl_fp32)
    )
    folder = Path(tempfile.mkdtemp(prefix="ours-bench-")) / "run"
    start = time.perf_counter()
    train(spec, base_model=source, adapter=None, training=training, folder=folder, identity={})
    ours_s = time.perf_counter() - start
    summary = json.loads((folder / "train_config.json").read_text())
    ours_tokens, ours_loss = int(summary["tokens"]), float(summary["train_loss"])
    ours_train_s = float(summary["runtime_s"])

    theirs_rate = theirs_tokens / theirs_s
    ours_rate = ours_tokens / ours_train_s
    label = "TRL defaults, fp32" if args.trl_fp32 else "TRL defaults"
    print(f"examples {args.examples}, batch {args.batch_size}, max_length {args.max_length}")
    print(
        f"{label:<18} : {theirs_tokens} tokens in {theirs_s:.1f} s = {theirs_rate:.1f} tok/s, "
        f"mean loss {theirs_loss:.4f}"
    )
    ours = "medharness"
    print(
        f"{ours:<18} : {ours_tokens} tokens in {ours_train_s:.1f} s = {ours_rate:.1f} tok/s, "
        f"mean loss {ours_loss:.4f} (whole recipe incl. setup and save: {ours_s:.1f} s)"
    )
    print(f"ratio (medharness / TRL tokens per second): {ours_rate / theirs_rate:.2f}")


if __name__ == "__main__":
    main()
