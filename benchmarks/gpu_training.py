"""GPU training recipes on a Llama-3.2-1B-shaped model: tokens/s, peak memory and MFU.

Each recipe trains a randomly initialised model built from a Llama-3.2-1B-shaped config
(16 layers, hidden 2048, 32 heads / 8 KV heads, vocabulary 128,256; no hub weights needed)
through medharness's own recipe code (``trainers.sft.train``) on MedQuAD train pairs:

- ``lora_bf16``: LoRA r16 on all linear layers, bf16 autocast
- ``qlora_nf4``: LoRA on 4-bit nf4 weights (bitsandbytes; skipped, with the reason, without it)
- ``full_gc``: every parameter, bf16 autocast, gradient checkpointing
- ``packing``: LoRA bf16 with examples packed into max_length blocks (padding-free, sdpa)

Tokens/s is the median of the per-step figures after the first two steps (non-padding
tokens, as TRL counts them), so model load and the final save are not in it. Peak memory is
``torch.cuda.max_memory_allocated``. MFU is model FLOPs per second over the GPU's dense bf16
peak (989 TFLOP/s for H100/H200 SXM, or ``--peak-tflops``): 6 x parameters per token for full
training, 4 x for LoRA and QLoRA (frozen weights need no weight gradients); gradient
checkpointing's recomputation is not counted, as MFU's definition asks.

Then the built-in SmolLM2-135M-Instruct (real weights) trains the same steps with LoRA in
bf16 and in fp32, and the script prints both losses.

    MEDHARNESS_DATA_DIR=... python benchmarks/gpu_training.py --steps 30 --out gpu_training.json

``--smoke`` runs every recipe that a CPU can run (fp32, 2 steps, a 2-layer model of the same
shape family) to check the script itself.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

LLAMA_3_2_1B = {
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "rope_theta": 500000.0,
    "tie_word_embeddings": True,
    "rms_norm_eps": 1e-5,
}
SMOKE_SHAPE = {
    **LLAMA_3_2_1B,
    "hidden_size": 64,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}
RECIPES: dict[str, dict[str, Any]] = {
    "lora_bf16": {"recipe": "lora", "precision": "bf16"},
    "qlora_nf4": {"recipe": "qlora", "precision": "bf16"},
    "full_gc": {"recipe": "full", "precision": "bf16", "gradient_checkpointing": True},
    "packing": {"recipe": "lora", "precision": "bf16", "packing": True},
}
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def random_llama(folder: Path, shape: dict[str, Any], tokenizer_source: str) -> Path:
    """A randomly initialised Llama of ``shape`` with the built-in model's tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**shape))
    model.save_pretrained(folder, safe_serialization=True)
    AutoTokenizer.from_pretrained(tokenizer_source).save_pretrained(folder)
    return folder


def peak_flops(device_name: str, override: float | None) -> float | None:
    if override:
        return override * 1e12
    found = [tflops for name, tflops in PEAK_TFLOPS.items() if name in device_name]
    return found[0] * 1e12 if found else None


def run_recipe(
    name: str, settings: dict[str, Any], model: Path, training: Any, args: argparse.Namespace
) -> dict[str, Any]:
    import torch
    from transformers import AutoConfig

    from medharness.core.errors import UserError
    from medharness.trainers.sft import check_runnable, train
    from medharness.trainers.spec import TrainSpec

    cuda = torch.cuda.is_available()
    spec = TrainSpec(
        **{**settings, **({} if cuda else {"precision": "fp32"})},
        max_steps=args.steps,
        batch_size=args.batch_size,
        max_seq_length=args.max_length,
        learning_rate=2e-4,
        logging_steps=1,
        group_by_length=not settings.get("packing", False),
        save_steps=args.steps + 1,  # no checkpoint: the figures are the training's own
    )
    try:
        check_runnable(spec)
    except UserError as exc:
        return {"recipe": name, "skipped": str(exc)}
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    folder = Path(tempfile.mkdtemp(prefix=f"gpu-{name}-")) / "run"
    started = time.perf_counter()
    train(spec, base_model=str(model), adapter=None, training=training, folder=folder, identity={})
    wall = time.perf_counter() - started
    summary = json.loads((folder / "train_config.json").read_text())
    rows = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    rates = [row["tokens_per_s"] for row in rows if row.get("tokens_per_s")][2:]
    tokens_per_s = statistics.median(rates) if rates else summary["tokens_per_s"]
    config = AutoConfig.from_pretrained(model)
    parameters = sum_parameters(config)
    flops_per_token = (6 if spec.recipe == "full" else 4) * parameters
    peak = peak_flops(torch.cuda.get_device_name() if cuda else "", args.peak_tflops)
    return {
        "recipe": name,
        "steps": summary["steps"],
        "tokens_per_s": round(tokens_per_s, 1),
        "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        "mfu": round(flops_per_token * tokens_per_s / peak, 4) if peak else None,
        "parameters": parameters,
        "last_loss": summary["last_logged_loss"],
        "wall_s": round(wall, 1),
    }


def sum_parameters(config: Any) -> int:
    """Parameters of a Llama config, counted from its shapes (tied embeddings once)."""
    h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * i + 2 * h
    head = 0 if config.tie_word_embeddings else config.vocab_size * h
    return config.vocab_size * h + layers * per_layer + h + head


def precision_losses(training: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The real built-in model, LoRA for the same steps in bf16 and fp32: the loss each ends on."""
    import torch

    from medharness.models.builtin import builtin_model_dir
    from medharness.trainers.sft import train
    from medharness.trainers.spec import TrainSpec

    precisions = ["bf16", "fp32"] if torch.cuda.is_available() else ["fp32"]
    found = []
    for precision in precisions:
        spec = TrainSpec(
            precision=precision,  # type: ignore[arg-type]
            max_steps=args.steps,
            batch_size=args.batch_size,
            max_seq_length=args.max_length,
            logging_steps=1,
            save_steps=args.steps + 1,
        )
        folder = Path(tempfile.mkdtemp(prefix=f"builtin-{precision}-")) / "run"
        source = str(builtin_model_dir())
        train(spec, base_model=source, adapter=None, training=training, folder=folder, identity={})
        summary = json.loads((folder / "train_config.json").read_text())
        found.append(
            {
                "precision": precision,
                "train_loss": round(summary["train_loss"], 4),
                "last_loss": round(summary["last_logged_loss"], 4),
            }
        )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--examples", type=int, default=512)
    parser.add_argument("--recipes", nargs="*", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak")
    parser.add_argument("--smoke", action="store_true", help="2 steps of a 2-layer model")
    parser.add_argument("--out", type=Path, help="also write the figures here (JSON)")
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.batch_size, args.max_length, args.examples = 2, 2, 128, 8

    import torch

    from medharness.data import resolve_data_root
    from medharness.models.builtin import builtin_model_dir
    from medharness.trainers.data import medquad_examples

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"{device}; torch {torch.__version__}; bitsandbytes: "
          f"{importlib.util.find_spec('bitsandbytes') is not None}")  # fmt: skip
    training = medquad_examples(resolve_data_root(None, Path.cwd()).path, args.examples, None)
    shape = SMOKE_SHAPE if args.smoke else LLAMA_3_2_1B
    model = random_llama(
        Path(tempfile.mkdtemp(prefix="llama-1b-")), shape, str(builtin_model_dir())
    )
    results = [run_recipe(name, RECIPES[name], model, training, args) for name in args.recipes]
    print("| recipe | steps | tokens/s | peak GiB | MFU | last loss |")
    print("|---|---|---|---|---|---|")
    for row in results:
        if "skipped" in row:
            print(f"| {row['recipe']} | skipped: {row['skipped']} |||||")
        else:
            print(f"| {row['recipe']} | {row['steps']} | {row['tokens_per_s']} | "
                  f"{row['peak_gib']} | {row['mfu']} | {row['last_loss']:.4f} |")  # fmt: skip
    losses = precision_losses(training, args)
    for row in losses:
        print(f"built-in model, LoRA {row['precision']}: mean loss {row['train_loss']}, "
              f"last {row['last_loss']}")  # fmt: skip
    if args.out:
        figures = {"device": device, "recipes": results, "builtin_precision": losses}
        args.out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
