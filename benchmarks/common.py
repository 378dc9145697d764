"""What the benchmark scripts share: timing a whole process, and the two commands compared."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def timed(command: list[str]) -> float:
    """Wall seconds of one whole process (start-up and model load included)."""
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def medharness_eval(task: str, limit: int, out: Path, *options: str) -> list[str]:
    """`medharness eval` of the built-in model on the first ``limit`` samples of ``task``."""
    return [
        str(BIN / "medharness"),
        "eval",
        "--model",
        "smollm2-135m-instruct",
        "--tasks",
        task,
        "--limit",
        str(limit),
        "--out",
        str(out),
        *options,
    ]


def lm_eval_run(task: str, limit: int, weights: Path, out: Path, *options: str) -> list[str]:
    """`lm-eval run` (HF backend, CPU) on medharness's lm-eval task YAML, samples logged."""
    return [
        str(BIN / "lm-eval"),
        "run",
        "--include_path",
        str(ROOT / "tasks"),
        "--tasks",
        task,
        "--limit",
        str(limit),
        "--model",
        "hf",
        "--model_args",
        f"pretrained={weights}",
        "--device",
        "cpu",
        "--log_samples",
        "--output_path",
        str(out),
        *options,
    ]


def save_random_lora(model_dir: str | Path) -> str:
    """A rank-16 LoRA on every linear layer with small random B, so it changes the answers."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folder = Path(tempfile.mkdtemp(prefix="lora-bench-")) / "adapter"
    torch.manual_seed(0)
    lora = get_peft_model(
        AutoModelForCausalLM.from_pretrained(model_dir),
        LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"),
    )
    with torch.no_grad():
        for name, parameter in lora.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.002)
    lora.save_pretrained(folder)
    return str(folder)
