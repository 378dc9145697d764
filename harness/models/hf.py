"""The transformers backend: a causal LM scored the way lm-eval's HFLM scores it."""

from __future__ import annotations

import copy
import hashlib
import inspect
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from medharness.core.cache import weights_sha256
from medharness.core.errors import UserError, boundary, first_line
from medharness.models.adapters import (
    adapter_sha256,
    attach_adapter,
    base_weights_copy,
    merge_when_exact,
    without_adapter,
)
from medharness.models.base import Completion, Progress, Prompt, Sampling, SharedPrefix
from medharness.models.choice import auto_batch_size, cpu_threads
from medharness.models.loading import LoadRequest
from medharness.models.prompts import chat_prompt, encode_pairs

T = TypeVar("T")
# One sequence to run: its tokens, and for each request it scores (the request's index, the
# position whose logits predict its first continuation token, the continuation's tokens).
Row = tuple[list[int], list[tuple[int, int, list[int]]]]


def scoring_rows(encoded: Sequence[tuple[list[int], list[int]]], first_index: int = 0) -> list[Row]:
    """The sequences that score encoded requests (numbered from ``first_index``): requests
    that share a context and whose continuations are single tokens share one row, the
    context itself; any other request is its context and continuation but the last token."""
    rows: list[Row] = []
    shared: dict[tuple[int, ...], int] = {}
    for index, (context, continuation) in enumerate(encoded, start=first_index):
        if len(continuation) == 1:
            key = tuple(context)
            if key not in shared:
                shared[key] = len(rows)
                rows.append((context, []))
            rows[shared[key]][1].append((index, len(context) - 1, continuation))
        else:
            # logits at position p predict token p + 1 of the unshifted sequence
            tokens = (context + continuation)[:-1]
            rows.append((tokens, [(index, len(context) - 1, continuation)]))
    return rows


def shared_split(rows: Sequence[Row]) -> int:
    """How many leading tokens every row shares and can take from a cache: the longest
    common token prefix, short of each row's last token and of every scored position
    (whose logits must come out of the rows' own run)."""
    if not rows:
        return 0
    first, *others = (tokens for tokens, _ in rows)
    common = len(first)
    for tokens in others:
        common = next(
            (i for i, (a, b) in enumerate(zip(first[:common], tokens, strict=False)) if a != b),
            min(common, len(tokens)),
        )
    shortest = min(len(tokens) for tokens, _ in rows) - 1
    earliest = min(position for _, wanted in rows for _, position, _ in wanted)
    return max(0, min(common, shortest, earliest))


def cache_keyword(model: Any) -> str:
    """The forward argument that takes a KV cache: ``cache`` in recent transformers,
    ``past_key_values`` before (a PEFT wrapper's forward is its base model's)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


class StepProgress:
    """A stopping criterion that never stops: it reports each decoding step of a batch as
    ``batch / max_new_tokens`` samples' worth of work, and the rest when the batch ends."""

    def __init__(self, progress: Progress | None, batch: int, max_new_tokens: int) -> None:
        self.progress, self.per_step, self.batch = progress, batch / max_new_tokens, batch
        self.reported = 0.0

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        if self.progress is not None and self.reported + self.per_step < self.batch:
            self.reported += self.per_step
            self.progress(self.per_step)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    def finish(self) -> None:
        if self.progress is not None:
            self.progress(self.batch - self.reported)
        self.reported = self.batch


@dataclass
class HFModel:
    """A transformers causal LM and its tokenizer, scored the way lm-eval's HFLM scores."""

    model: Any
    tokenizer: Any
    source: str
    batch_size: int = 8
    system_prompt: str | None = None
    adapter: str | None = None
    weights: str | None = None  # sha256 of the weight files, or the hub revision
    adapter_weights: str | None = None
    adapter_merged: bool = False  # folded into the weights for speed (see merge_when_exact)
    # the base's weights as loaded, kept by an engine that swaps folded adapters (with_adapter)
    base_weights: dict[str, Any] | None = None

    def with_adapter(self, adapter: str | None, allow_pickle: bool = False) -> HFModel | None:
        """This engine with ``adapter`` in place of its own (None: the base alone), its
        answers those of a fresh load of base + adapter; the base is not loaded again. The
        model this is called on shares the weights and must not be used after. None where
        a folded adapter cannot be taken out (the base's weights were not kept)."""
        if self.adapter_merged and self.base_weights is None:
            return None
        base = without_adapter(self.model, self.adapter_merged, self.base_weights)
        model, merged = (base, False)
        if adapter:
            model, merged = merge_when_exact(attach_adapter(base, adapter, allow_pickle))
        model.to(self.device)
        model.eval()
        return replace(
            self,
            model=model,
            adapter=adapter,
            adapter_weights=adapter_sha256(adapter),
            adapter_merged=merged,
        )

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    @property
    def chunk_size(self) -> int:
        return max(16, 2 * self.batch_size)

    def loglikelihoods(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        """Requests that share a context and whose continuations are single tokens (option
        letters) are read off one forward pass of that context, as lm-eval does."""
        results = [0.0] * len(requests)
        self._score(scoring_rows(encode_pairs(self.tokenizer, requests)), results)
        return results

    def shared_prefix_loglikelihoods(self, groups: Sequence[SharedPrefix]) -> list[float]:
        """``loglikelihoods`` of each group's requests, the tokens they share run once per
        group and their KV cache reused by every branch. The requests are tokenised as the
        plain path tokenises them and split where their tokens part (not where the prefix
        text ends: a token may straddle it), so each branch sees the same tokens; a group
        that shares no token, or has one row only, is scored the plain way."""
        grouped = [group.requests() for group in groups]
        encoded = encode_pairs(self.tokenizer, [request for group in grouped for request in group])
        results = [0.0] * len(encoded)
        plain: list[Row] = []
        start = 0
        for group in grouped:
            count = len(group)
            rows = scoring_rows(encoded[start : start + count], start)
            split = shared_split(rows)
            if split > 0 and len(rows) > 1:
                self._score(rows, results, self._prefix_cache(rows[0][0][:split]))
            else:
                plain.extend(rows)
            start += count
        self._score(plain, results)
        return results

    def _prefix_cache(self, tokens: list[int]) -> Any:
        """The KV cache of ``tokens`` run once (batch of one); no logits are kept."""
        import torch
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        with torch.inference_mode():
            self.model(
                input_ids=torch.tensor([tokens], device=self.device),
                logits_to_keep=1,
                use_cache=True,
                **{cache_keyword(self.model): cache},
            )
        return cache

    def _score(self, rows: list[Row], results: list[float], prefix: Any = None) -> None:
        """Each row's wanted log-likelihoods into ``results``, longest rows first in batches.
        With ``prefix`` (the KV cache of the rows' first tokens), each batch runs only the
        rest of its rows on a copy of it: a batch's own tokens never reach the next."""
        import torch

        skip = 0 if prefix is None else prefix.get_seq_length()
        pad = self.tokenizer.pad_token_id or 0

        def score(batch: list[Row]) -> None:
            width = max(len(tokens) - skip for tokens, _ in batch)
            # Right padding needs no attention mask: causal attention at a real position only
            # sees earlier, real tokens (what lm-eval does too; it keeps the fast causal kernel).
            input_ids = torch.tensor([t[skip:] + [pad] * (width - len(t) + skip) for t, _ in batch])
            # Only the positions that score a continuation go through the LM head: for option
            # letters that is one position per question instead of the whole context.
            needed = sorted(
                {
                    first + k - skip
                    for _, wanted in batch
                    for _, first, targets in wanted
                    for k in range(len(targets))
                }
            )
            column = {position: i for i, position in enumerate(needed)}
            with torch.inference_mode():
                reused = {}
                if prefix is not None:
                    cache = copy.deepcopy(prefix)
                    cache.batch_repeat_interleave(len(batch))
                    reused = {cache_keyword(self.model): cache}
                logits = self.model(
                    input_ids=input_ids.to(self.device),
                    logits_to_keep=torch.tensor(needed, device=self.device),
                    **reused,
                ).logits
            for row_number, (_, wanted) in enumerate(batch):
                for index, first, targets in wanted:
                    positions = torch.tensor(
                        [column[first + k - skip] for k in range(len(targets))]
                    )
                    logprobs = torch.log_softmax(logits[row_number, positions].float(), dim=-1)
                    picked = logprobs[torch.arange(len(targets)), torch.tensor(targets)]
                    results[index] = float(picked.sum().cpu())

        self._in_batches(sorted(rows, key=lambda row: -len(row[0])), score)

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
        import torch

        prompts = [
            chat_prompt(self.tokenizer, message, self.system_prompt, self.source)
            for message in user_messages
        ]
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        outputs = [Completion("", hit_limit=False)] * len(prompts)
        self.tokenizer.padding_side = "left"
        stops = self.stop_token_ids()

        def answer(batch: list[int]) -> None:
            encoded = self.tokenizer(
                [prompts[i] for i in batch],
                return_tensors="pt",
                padding=True,
                add_special_tokens=False,
            ).to(self.device)
            steps = StepProgress(progress, len(batch), max_new_tokens)
            decoding = self.greedy(max_new_tokens)
            if sampling is not None:
                decoding = self.sampled(max_new_tokens, sampling, batch)
            with torch.inference_mode():
                generated = self.model.generate(
                    **encoded,
                    **decoding,
                    stopping_criteria=[steps] if progress is not None else None,
                )
            new_tokens = generated[:, encoded["input_ids"].shape[1] :].tolist()
            texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            for index, text, tokens in zip(batch, texts, new_tokens, strict=True):
                outputs[index] = ended(text, tokens, stops, max_new_tokens)
            steps.finish()

        self._in_batches(order, answer)
        return outputs

    def stop_token_ids(self) -> set[int]:
        """The tokens that end an answer: the generation config's end-of-sequence ids (a
        list for chat models with an end-of-turn token too) and the tokenizer's."""
        configured = self.model.generation_config.eos_token_id
        ids = set(configured if isinstance(configured, list) else [configured])
        return {i for i in ids | {self.tokenizer.eos_token_id} if i is not None}

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def greedy(self, max_new_tokens: int) -> dict[str, Any]:
        """Greedy decoding, whatever sampling defaults the model's generation config has."""
        return {
            "max_new_tokens": max_new_tokens,
            "do_sample": False,
            "temperature": None,
            "top_p": None,
            "top_k": None,
            "pad_token_id": self.tokenizer.pad_token_id,
        }

    def sampled(self, max_new_tokens: int, sampling: Sampling, batch: list[int]) -> dict[str, Any]:
        """Sampled decoding of a batch, torch's generator seeded from its messages' seeds:
        transformers draws one batch from one generator, so an answer is the same on a
        rerun that batches its questions alike (the same batch size)."""
        import torch

        torch.manual_seed(batch_seed([sampling.seeds[i] for i in batch]))
        return {
            **self.greedy(max_new_tokens),
            "do_sample": True,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
        }

    def stream(self, user_message: str, max_new_tokens: int) -> Iterator[str]:
        """The greedy answer to one user message as it grows, decoded as ``generate``
        decodes it (the playground shows it word by word)."""
        import torch
        from transformers import TextIteratorStreamer

        prompt = chat_prompt(self.tokenizer, user_message, self.system_prompt, self.source)
        encoded = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)

        def decode() -> None:
            with torch.inference_mode():
                self.model.generate(
                    **encoded.to(self.device), **self.greedy(max_new_tokens), streamer=streamer
                )

        worker = threading.Thread(target=decode, daemon=True)
        worker.start()
        text = ""
        for piece in streamer:
            text += piece
            yield text.strip()
        worker.join()

    def _in_batches(self, items: Sequence[T], run: Callable[[list[T]], None]) -> None:
        """Run ``items`` in batches of ``batch_size``; a batch that runs out of accelerator
        memory is retried at half the size, and the smaller size kept for what follows."""
        import torch

        start = 0
        while start < len(items):
            batch = list(items[start : start + self.batch_size])
            try:
                run(batch)
            except torch.OutOfMemoryError:
                if self.batch_size == 1:
                    raise UserError(
                        f"{self.source} ran out of memory at batch size 1 on {self.device}; "
                        "use a smaller dtype, a smaller model or a bigger device"
                    ) from None
                self.batch_size //= 2
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                print(
                    f"[{self.source}] out of memory; batch size lowered to {self.batch_size}",
                    file=sys.stderr,
                )
                continue
            start += len(batch)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "hf",
            "source": self.source,
            "adapter": self.adapter,
            "weights_sha256": self.weights,
            "adapter_sha256": self.adapter_weights,
            "adapter_merged": self.adapter_merged,
            "dtype": str(next(self.model.parameters()).dtype).replace("torch.", ""),
            "device": str(self.device),
            "batch_size": self.batch_size,
            "system_prompt": self.system_prompt,
        }


def ended(text: str, tokens: Sequence[int], stops: set[int], max_new_tokens: int) -> Completion:
    """A decoded answer and how it ended: its tokens up to the first stop token, or the
    whole budget spent with none (cut off). Padding after a finished answer is a stop token
    here, as transformers pads finished rows with the end-of-sequence id."""
    length = next((i + 1 for i, token in enumerate(tokens) if token in stops), None)
    cut_off = length is None and len(tokens) >= max_new_tokens
    return Completion(text.strip(), cut_off, len(tokens) if length is None else length)


def load_failure(spec: str, exc: BaseException, allow_pickle: bool) -> str:
    """One line for a model that would not load, with the hint that fits the cause."""
    text = first_line(exc)
    if "ignore_mismatched_sizes" in text or "size mismatch" in text:
        return f"could not load model {spec!r}: its weights do not fit its config.json's shapes"
    if "deserializing header" in text or "incomplete metadata" in text:
        return f"could not load model {spec!r}: a weight file is corrupt or truncated ({text})"
    if "Weights only load failed" in text or "weights_only" in text:
        return (
            f"could not load model {spec!r}: its pickled weights hold more than tensors and "
            "are loaded with weights_only, so nothing in them runs; convert them to safetensors"
        )
    if "custom code" in text:
        return (
            f"could not load model {spec!r}: it asks to run code from its folder (auto_map), "
            "and medharness never runs a model's own code"
        )
    about_weights = "safetensors" in text or "file named" in text
    hint = " (only safetensors weights load unless allow_pickle)"
    return f"could not load model {spec!r}: {text}" + (
        hint if about_weights and not allow_pickle else ""
    )


def weights_record(source: str, config: Any) -> str | None:
    """sha256 of a local checkpoint's weights, or the hub revision a hub id resolved to."""
    local = Path(source)
    if local.is_dir():
        return weights_sha256(local)
    return f"revision:{getattr(config, '_commit_hash', None)}"


def load(request: LoadRequest) -> HFModel:
    """The transformers backend's loader (declared in models/backends/hf.py): a model for
    the request's source (a local checkpoint or a hub id), safetensors only unless
    ``allow_pickle``, never remote code, its base weights kept where it will serve other
    adapters after this one (with_adapter); every failure is one UserError line."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec, source, adapter, dtype = request.spec, request.source, request.adapter, request.dtype
    allow_pickle, batch_size = request.settings.allow_pickle, request.settings.batch_size
    device, swaps_adapters = request.settings.device, bool(request.later_adapters)

    with boundary(spec, lambda exc: load_failure(spec, exc, allow_pickle)):
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
        model: Any = AutoModelForCausalLM.from_pretrained(
            source,
            dtype=dtype,
            use_safetensors=None if allow_pickle else True,
            trust_remote_code=False,
        )
    merged, base_weights = False, base_weights_copy(model) if swaps_adapters else None
    if adapter:
        model, merged = merge_when_exact(attach_adapter(model, adapter, allow_pickle))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if device == "cpu":
        torch.set_num_threads(cpu_threads())
    model.to(device)
    model.eval()
    if batch_size == "auto":
        batch_size = auto_batch_size(model, device)
    return HFModel(
        model=model,
        tokenizer=tokenizer,
        source=spec,
        batch_size=int(batch_size),
        system_prompt=request.settings.system_prompt,
        adapter=adapter,
        weights=weights_record(source, model.config),
        adapter_weights=adapter_sha256(adapter),
        adapter_merged=merged,
        base_weights=base_weights,
    )


def batch_seed(seeds: Sequence[int]) -> int:
    """One seed for a batch of messages from theirs, in their order."""
    digest = hashlib.sha256(",".join(map(str, seeds)).encode()).digest()
    return int.from_bytes(digest[:8], "big")
