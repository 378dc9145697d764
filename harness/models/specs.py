"""Model specs as users write them, and the registry of the backends that load them: the
one place that tells the kinds apart.

A spec is one of ``smollm2-135m-instruct`` (the built-in model), ``fake:PATH`` (a scripted
model), ``openai:NAME`` (a model an OpenAI-compatible server serves), a local directory, or a
hub id. A backend is one ``Backend``, declared in its own module of ``models/backends/`` and
registered here: its spec prefix (or none: an engine for the weights a plain spec names,
picked by the entry's ``backend``), the entry settings that belong to it, and its loader,
imported only when a model of its kind loads, so that parsing a config or printing --help
never imports a backend (nor vLLM or torch).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

BUILTIN_MODEL = "smollm2-135m-instruct"
AUTO_BACKEND = "auto"  # the entry's default: the engine is picked where the model loads


@dataclass(frozen=True)
class Backend:
    """One kind of model, declared once. ``loader`` is ``module:function``, a function of a
    ``loading.LoadRequest`` that returns the loaded model; ``settings`` is a model of the
    entry's keys that only this backend takes (every model entry has them; given on an entry
    of another kind, ``misplaced`` is the error), ``answer_neutral`` those of them its
    answers do not depend on (how it is asked, not what); ``check`` refuses at config time an
    entry this backend cannot serve (ValueError); ``label`` names a model of this kind from
    the rest of its spec (run-directory names)."""

    name: str
    loader: str
    prefix: str | None = None
    settings: type[BaseModel] | None = None
    misplaced: str = ""
    check: Callable[[Any], None] | None = None
    label: Callable[[str], str] = str
    answer_neutral: tuple[str, ...] = ()

    @property
    def setting_names(self) -> tuple[str, ...]:
        """The entry keys this backend's settings add."""
        return () if self.settings is None else tuple(self.settings.model_fields)

    @property
    def engine(self) -> bool:
        """Whether it loads the weights a plain spec names (picked by ``backend:``)."""
        return self.prefix is None

    def named(self, spec: str) -> str | None:
        """The rest of a spec written with this backend's prefix; None for any other."""
        if self.prefix is None or not spec.startswith(self.prefix):
            return None
        return spec[len(self.prefix) :]

    def serves(self, entry: Any) -> bool:
        """Whether ``entry`` (a config's model entry) is a model of this backend."""
        return self.named(entry.model) is not None if self.prefix else entry.backend == self.name


BACKENDS: dict[str, Backend] = {}


def register(backend: Backend) -> Backend:
    """Add a backend; its name and prefix must be new."""
    taken = {AUTO_BACKEND, *BACKENDS}
    prefixes = {known.prefix for known in BACKENDS.values()} - {None}
    if backend.name in taken or (backend.prefix is not None and backend.prefix in prefixes):
        raise ValueError(f"backend {backend.name!r} (prefix {backend.prefix!r}) is taken")
    BACKENDS[backend.name] = backend
    return backend


def prefixed(spec: str) -> tuple[Backend, str] | None:
    """The backend a spec's prefix names, and the rest of the spec; None for plain specs."""
    for backend in BACKENDS.values():
        rest = backend.named(spec)
        if rest is not None:
            return backend, rest
    return None


def engine_names() -> tuple[str, ...]:
    """What an entry's ``backend`` may say: auto, then every engine in registration order."""
    return (AUTO_BACKEND, *(b.name for b in BACKENDS.values() if b.engine))


def fake_script(spec: str) -> Path | None:
    """The script path of a ``fake:PATH`` spec; None for any other spec."""
    rest = BACKENDS["fake"].named(spec)
    return None if rest is None else Path(rest).expanduser()


def looks_like_path(spec: str) -> bool:
    """Whether a spec that names no existing folder was meant as a path, not a hub id."""
    return spec.startswith(("/", ".", "~")) or spec.count("/") > 1 or os.sep in spec[:1]


def is_hub_id(spec: str) -> bool:
    """A spec that names a hub repository: not built in, no backend's prefix, not a local
    folder."""
    return (
        spec != BUILTIN_MODEL
        and prefixed(spec) is None
        and not looks_like_path(spec)
        and not Path(spec).expanduser().exists()
    )


def endpoint_model(spec: str) -> str | None:
    """The served model name of an ``openai:NAME`` spec; None for any other spec."""
    return BACKENDS["openai"].named(spec)


def absolute_spec(spec: str) -> str:
    """``spec`` with a local path (a fake script, a folder) made absolute, as a process
    started elsewhere must be given it; hub ids and other names unchanged."""
    script = fake_script(spec)
    if script is not None:
        return str(BACKENDS["fake"].prefix) + str(script.resolve())
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec


def answer_neutral_settings() -> tuple[str, ...]:
    """The entry settings no model's answers depend on (how a server is asked)."""
    return tuple(name for backend in BACKENDS.values() for name in backend.answer_neutral)


def register_shipped_backends() -> None:
    """Register the backend each module of ``models/backends/`` declares, in name order (the
    order specs are matched and engines are listed). The modules are found, not imported by
    name: each imports this one for ``Backend``, and this one names none of them."""
    package = importlib.import_module(f"{__package__}.backends")
    for module in sorted(info.name for info in pkgutil.iter_modules(package.__path__)):
        register(importlib.import_module(f"{package.__name__}.{module}").BACKEND)


register_shipped_backends()
