"""Resolve a model spec to a ready model of the right backend: the registered backend its
prefix names, or the engine the entry's ``backend`` picks for the weights it names."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from medharness.core.errors import UserError
from medharness.models.base import LanguageModel
from medharness.models.builtin import builtin_model_dir
from medharness.models.choice import pick_backend, pick_device, pick_dtype
from medharness.models.hub import require_hub_model
from medharness.models.specs import BACKENDS, BUILTIN_MODEL, Backend, looks_like_path, prefixed

Settings = TypeVar("Settings", bound=BaseModel)


@dataclass(frozen=True)
class LoadSettings:
    """How a model entry asks for its model to be loaded: its keys every backend reads, and
    ``own``, each backend's settings (of its declared model) the entry gave."""

    backend: str = "auto"
    dtype: str = "auto"
    device: str = "auto"
    batch_size: int | str = "auto"
    system_prompt: str | None = None
    allow_pickle: bool = False
    own: tuple[BaseModel, ...] = ()

    @classmethod
    def of(cls, entry: Any) -> LoadSettings:
        """A config entry's settings."""
        names = [*cls.common_keys()]
        names += [name for backend in BACKENDS.values() for name in backend.setting_names]
        return cls.of_keys({name: getattr(entry, name) for name in names})

    @classmethod
    def common_keys(cls) -> tuple[str, ...]:
        """The entry keys every backend is loaded with."""
        return tuple(field.name for field in fields(cls) if field.name != "own")

    @classmethod
    def of_keys(cls, keys: Mapping[str, Any]) -> LoadSettings:
        """Settings from entry keys: the common ones, and any backend's own."""
        common, own = dict(keys), []
        for backend in BACKENDS.values():
            given = {name: common.pop(name) for name in backend.setting_names if name in common}
            if backend.settings is not None and any(v is not None for v in given.values()):
                own.append(backend.settings.model_validate(given))
        return cls(**common, own=tuple(own))

    def of_backend(self, kind: type[Settings]) -> Settings:
        """A backend's own settings: the entry's, else the defaults."""
        return next((own for own in self.own if isinstance(own, kind)), kind())


@dataclass(frozen=True)
class LoadRequest:
    """What a backend's loader is given: the spec; ``source``, the rest of the spec after
    the backend's prefix, or the weights (folder or hub id) a plain spec names; the adapter;
    the settings, for an engine with the device picked; the dtype picked for an engine;
    ``later_adapters``, what the engine will be asked to serve after this adapter
    (swap_adapter; None: the base alone)."""

    spec: str
    source: str
    adapter: str | None
    settings: LoadSettings
    dtype: Any = None
    later_adapters: Sequence[str | None] = ()


Loader = Callable[[LoadRequest], LanguageModel]


def load_model(
    spec: str,
    *,
    adapter: str | None = None,
    later_adapters: Sequence[str | None] = (),
    **settings: Any,
) -> LanguageModel:
    """Resolve a model spec to a ready model; every failure is one UserError line.
    ``settings``: a model entry's keys (LoadSettings.of_keys)."""
    return load_with(spec, adapter, LoadSettings.of_keys(settings), later_adapters)


def load_with(
    spec: str,
    adapter: str | None,
    settings: LoadSettings,
    later_adapters: Sequence[str | None] = (),
) -> LanguageModel:
    """The model ``spec`` (+ ``adapter``) names, loaded by its backend with ``settings``."""
    found = prefixed(spec)
    if found is not None:
        backend, rest = found
        return loader_of(backend)(LoadRequest(spec, rest, adapter, settings))
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    source = weights_source(spec)
    device = pick_device(settings.device)
    dtype = pick_dtype(settings.dtype, device)
    engine = BACKENDS[pick_backend(settings.backend, device, adapter)]
    on_device = replace(settings, device=device)
    return loader_of(engine)(LoadRequest(spec, source, adapter, on_device, dtype, later_adapters))


def weights_source(spec: str) -> str:
    """The weights a plain spec names: the built-in model's folder, a local folder, or a
    hub id the hub or its cache can give."""
    if spec == BUILTIN_MODEL:
        return str(builtin_model_dir())
    if Path(spec).expanduser().is_dir():
        return str(Path(spec).expanduser())
    if looks_like_path(spec):
        raise UserError(f"model path does not exist: {spec}")
    require_hub_model(spec)
    return spec  # a hub id


def loader_of(backend: Backend) -> Loader:
    """A backend's loader, its module imported now (vLLM's only when it loads a model)."""
    module, _, function = backend.loader.partition(":")
    loader: Loader = getattr(importlib.import_module(module), function)
    return loader


def swap_adapter(
    model: LanguageModel, adapter: str | None, allow_pickle: bool
) -> LanguageModel | None:
    """The engine of ``model`` serving ``adapter`` (None: the base alone) in its place, its
    answers those of a fresh load, the base not loaded again; None where the engine cannot
    (load anew). ``model`` must not be used after a swap."""
    swap = getattr(model, "with_adapter", None)
    return None if swap is None else swap(adapter, allow_pickle)
