"""vLLM: the engine an entry picks with ``backend: vllm`` (auto picks it on CUDA when it is
installed), and its ``vllm:`` settings."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from medharness.core.validation import Strict
from medharness.models.specs import Backend


class VLLMParallelism(Strict):
    """vLLM engine settings passed through as they are and recorded in the manifest."""

    # GPUs one model spans. Replicas (data parallel) are not an in-process setting: vLLM
    # refuses LLM(data_parallel_size>1); launch medharness under accelerate (one engine per
    # GPU) or serve with `vllm serve --data-parallel-size N` and use an openai: entry
    tensor_parallel_size: Annotated[int, Field(ge=1, le=64)] = 1
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] | None = None  # vLLM: 0.9
    max_model_len: Annotated[int, Field(ge=16)] | None = None  # vLLM: the model's own


class VLLMSettings(Strict):
    """The model entry's keys for this backend."""

    vllm: VLLMParallelism | None = None  # tensor_parallel_size, memory, length


BACKEND = Backend(
    "vllm",
    "medharness.models.vllm:load",
    settings=VLLMSettings,
    misplaced="vllm: settings need backend: vllm",
)
