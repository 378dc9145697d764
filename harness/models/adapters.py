"""PEFT adapters on a loaded model: attach, fold into the weights where that is exact, describe."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from medharness.core.cache import weights_sha256
from medharness.core.errors import UserError, boundary, first_line
from medharness.core.quiet import without_library_renames
from medharness.core.weights import refuse_pickles
from medharness.models.specs import looks_like_path


def merge_when_exact(model: Any) -> tuple[Any, bool]:
    """Fold a LoRA adapter into fp32 base weights, and say whether it was folded.

    An unmerged adapter adds two small matmuls per adapted layer at every generated token;
    folded, the model runs at the base model's speed with the same outputs up to fp32
    rounding. bf16/fp16 weights stay unmerged (rounding W + BA to 8 or 11 mantissa bits loses
    part of a small update), as do quantized bases and adapter types PEFT cannot fold."""
    config = model.peft_config.get("default")
    if config is None or getattr(config, "peft_type", None) != "LORA" or not foldable(model):
        return model, False
    return model.merge_and_unload(), True


def foldable(model: Any) -> bool:
    """Whether a LoRA adapter on this model would be folded into its weights: fp32 and not
    quantized (merge_when_exact)."""
    import torch

    return getattr(model.config, "quantization_config", None) is None and all(
        p.dtype == torch.float32 for p in model.parameters()
    )


def base_weights_copy(model: Any) -> dict[str, Any] | None:
    """A copy of a base model's weights, kept where an adapter will be folded into them:
    unmerging a folded adapter (W + BA - BA) does not give W back bit for bit, and the next
    adapter must start from W exactly. None where adapters stay unmerged (PEFT removes
    those exactly). A weight tied under two names (the embeddings an output layer shares)
    is copied once."""
    if not foldable(model):
        return None
    weights = model.state_dict(keep_vars=True)  # the tensors themselves: a tied one is one
    originals = {id(tensor): tensor for tensor in weights.values()}
    copies = {key: tensor.detach().clone() for key, tensor in originals.items()}
    return {name: copies[id(tensor)] for name, tensor in weights.items()}


def without_adapter(model: Any, merged: bool, base_weights: dict[str, Any] | None) -> Any:
    """The base model, its weights exactly as loaded: a folded adapter is overwritten with
    the kept copy (``HFModel.with_adapter`` takes a folded one out only where it was kept),
    an unmerged one removed."""
    from peft import PeftModel

    if merged:
        model.load_state_dict(base_weights)
        return model
    return model.unload() if isinstance(model, PeftModel) else model


def attach_adapter(model: Any, adapter: str, allow_pickle: bool = False) -> Any:
    from peft import PeftModel

    path = Path(adapter).expanduser()
    if path.exists() and not (path / "adapter_config.json").is_file():
        raise UserError(f"{adapter} is not a PEFT adapter directory (no adapter_config.json)")
    refuse_pickles(path, "adapter", allow_pickle)
    if not path.exists() and looks_like_path(adapter):
        raise UserError(f"adapter path does not exist: {adapter}")
    if path.exists():
        known_peft_type(path)

    def explain(exc: BaseException) -> str:
        if "size mismatch" in str(exc):
            trained_for = adapter_base(path)
            return (
                f"adapter {adapter!r} does not fit this model: its weights have other shapes "
                f"(trained for {trained_for or 'a different base model'})"
            )
        return f"could not load adapter {adapter!r}: {first_line(exc)}"

    with boundary(adapter, explain), without_library_renames():
        return PeftModel.from_pretrained(model, str(path) if path.exists() else adapter)


def known_peft_type(folder: Path) -> None:
    """An adapter_config.json that parses and names a PEFT type this peft knows."""
    from peft import PeftType

    config_path = folder / "adapter_config.json"
    with boundary(f"{config_path}: not valid JSON"):
        config = json.loads(config_path.read_text(encoding="utf-8"))
    kind = config.get("peft_type") if isinstance(config, dict) else None
    if kind not in {member.value for member in PeftType}:
        raise UserError(f"{config_path}: peft_type {kind!r} is not one this peft version knows")


def adapter_base(path: Path) -> str | None:
    try:
        config = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    base = config.get("base_model_name_or_path")
    return str(base) if base else None


def adapter_sha256(adapter: str | None) -> str | None:
    folder = Path(adapter).expanduser() if adapter else None
    return weights_sha256(folder) if folder and folder.is_dir() else None


def lora_rank(adapter: str) -> int | None:
    """The rank of a LoRA adapter (directory or hub id); None for other PEFT adapter types."""
    from peft import PeftConfig

    try:
        config = PeftConfig.from_pretrained(os.path.expanduser(adapter))
    except (OSError, ValueError) as exc:
        raise UserError(f"could not load adapter {adapter!r}: {first_line(exc)}") from None
    if str(getattr(config, "peft_type", "")) not in ("LORA", "PeftType.LORA"):
        return None
    return int(config.r)
