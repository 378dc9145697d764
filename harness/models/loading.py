"""Resolve a model spec to a ready model of the right backend."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from medharness.core.errors import UserError
from medharness.models.base import LanguageModel
from medharness.models.builtin import builtin_model_dir
from medharness.models.choice import pick_backend, pick_device, pick_dtype
from medharness.models.fake import FakeModel
from medharness.models.hf import load_hf_model
from medharness.models.hub import require_hub_model
from medharness.models.specs import (
    BUILTIN_MODEL,
    EndpointRequests,
    VLLMParallelism,
    endpoint_model,
    fake_script,
    looks_like_path,
)


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
    base_url: str | None = None,
    api_key_env: str | None = None,
    requests: EndpointRequests | None = None,
    vllm: VLLMParallelism | None = None,
    later_adapters: Sequence[str | None] = (),
) -> LanguageModel:
    """Resolve a model spec to a ready model; every failure is one UserError line.
    ``base_url``, ``api_key_env`` and ``requests`` serve ``openai:`` specs; ``vllm`` the
    vLLM backend; ``later_adapters``: what the engine will be asked to serve after this
    adapter (swap_adapter; None: the base alone)."""
    script = fake_script(spec)
    if script is not None:
        if adapter:
            raise UserError("a fake model cannot take an adapter")
        return FakeModel.from_file(script)
    served = endpoint_model(spec)
    if served is not None:
        from medharness.models.endpoint import load_endpoint_model

        if adapter or base_url is None:
            raise UserError(f"{spec}: an endpoint model takes a base_url and no adapter")
        return load_endpoint_model(
            served,
            base_url=base_url,
            api_key_env=api_key_env,
            settings=requests or EndpointRequests(),
            system_prompt=system_prompt,
        )

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    if spec == BUILTIN_MODEL:
        source = str(builtin_model_dir())
    elif Path(spec).expanduser().is_dir():
        source = str(Path(spec).expanduser())
    elif looks_like_path(spec):
        raise UserError(f"model path does not exist: {spec}")
    else:
        require_hub_model(spec)
        source = spec  # a hub id
    chosen_device = pick_device(device)
    chosen_dtype = pick_dtype(dtype, chosen_device)
    if pick_backend(backend, chosen_device, adapter) == "vllm":
        from medharness.models.vllm import load_vllm_model

        return load_vllm_model(
            spec,
            source,
            adapter=adapter,
            dtype=chosen_dtype,
            system_prompt=system_prompt,
            allow_pickle=allow_pickle,
            parallelism=vllm or VLLMParallelism(),
            later_adapters=later_adapters,
        )
    return load_hf_model(
        spec,
        source,
        adapter=adapter,
        dtype=chosen_dtype,
        device=chosen_device,
        batch_size=batch_size,
        system_prompt=system_prompt,
        allow_pickle=allow_pickle,
        swaps_adapters=bool(later_adapters),
    )


def swap_adapter(
    model: LanguageModel, adapter: str | None, allow_pickle: bool
) -> LanguageModel | None:
    """The engine of ``model`` serving ``adapter`` (None: the base alone) in its place, its
    answers those of a fresh load, the base not loaded again; None where the engine cannot
    (load anew). ``model`` must not be used after a swap."""
    swap = getattr(model, "with_adapter", None)
    return None if swap is None else swap(adapter, allow_pickle)
