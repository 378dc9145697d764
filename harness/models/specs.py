"""Model specs as users write them, and the backends that load them: the one place that
tells the kinds apart.

A spec is one of ``smollm2-135m-instruct`` (the built-in model), ``fake:PATH`` (a scripted
model), ``openai:NAME`` (a model an OpenAI-compatible server serves), a local directory, or a
hub id. A backend is one registered ``Backend``: its spec prefix (or none: an engine for the
weights a plain spec names, picked by the entry's ``backend``), the entry settings that
belong to it, and its loader, imported only when a model of its kind loads, so that parsing
a config or printing --help never imports a backend (nor vLLM or torch). How an endpoint is
called and how vLLM spreads a model over GPUs are settings of the entry, defined here so the
config and the backends share them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field

from medharness.core.validation import Strict

BUILTIN_MODEL = "smollm2-135m-instruct"
AUTO_BACKEND = "auto"  # the entry's default: the engine is picked where the model loads


@dataclass(frozen=True)
class Backend:
    """One kind of model, declared once. ``loader`` is ``module:function``, a function of a
    ``loading.LoadRequest`` that returns the loaded model; ``settings`` are the entry's keys
    that only this backend takes (given elsewhere, ``misplaced`` is the error); ``check``
    refuses at config time an entry this backend cannot serve (ValueError); ``label`` names
    a model of this kind from the rest of its spec (run-directory names)."""

    name: str
    loader: str
    prefix: str | None = None
    settings: tuple[str, ...] = ()
    misplaced: str = ""
    check: Callable[[Any], None] | None = None
    label: Callable[[str], str] = str

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


def check_base_url(base_url: str) -> str:
    """A base URL without trailing slash; credentials in it are refused (they would be
    recorded with the URL): the key belongs in the variable ``api_key_env`` names."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"base_url must be an http(s) URL, not {base_url!r}")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError(
            "base_url must not hold credentials, a query string or a fragment (they would be "
            "recorded with the URL); put the key in the variable api_key_env names"
        )
    return base_url.rstrip("/")


class EndpointRequests(Strict):
    """How an ``openai:`` entry's requests are sent."""

    concurrency: Annotated[int, Field(ge=1, le=1024)] = 8  # requests in flight at once
    timeout_s: Annotated[float, Field(gt=0, le=3600)] = 120.0  # per request, then a retry
    # a request that meets 429, 5xx, a timeout, a dropped connection or unreadable JSON is
    # sent again this many times, waiting backoff_s, 2x, 4x ... (or the server's Retry-After)
    retries: Annotated[int, Field(ge=0, le=20)] = 5
    backoff_s: Annotated[float, Field(ge=0, le=600)] = 1.0
    max_backoff_s: Annotated[float, Field(ge=0, le=3600)] = 60.0
    # at most this many requests per run (a paid API's budget); finished samples are kept
    # and a re-run continues after them
    max_requests: Annotated[int, Field(ge=1)] | None = None


class VLLMParallelism(Strict):
    """vLLM engine settings passed through as they are and recorded in the manifest."""

    # GPUs one model spans. Replicas (data parallel) are not an in-process setting: vLLM
    # refuses LLM(data_parallel_size>1); launch medharness under accelerate (one engine per
    # GPU) or serve with `vllm serve --data-parallel-size N` and use an openai: entry
    tensor_parallel_size: Annotated[int, Field(ge=1, le=64)] = 1
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] | None = None  # vLLM: 0.9
    max_model_len: Annotated[int, Field(ge=16)] | None = None  # vLLM: the model's own


def absolute_spec(spec: str) -> str:
    """``spec`` with a local path (a fake script, a folder) made absolute, as a process
    started elsewhere must be given it; hub ids and other names unchanged."""
    script = fake_script(spec)
    if script is not None:
        return str(BACKENDS["fake"].prefix) + str(script.resolve())
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec


def check_fake_entry(entry: Any) -> None:
    if entry.train is not None:
        raise ValueError("a fake model cannot be trained")


def check_endpoint_entry(entry: Any) -> None:
    if not endpoint_model(entry.model):
        raise ValueError("openai: needs the served model's name, as openai:NAME")
    if entry.base_url is None:
        raise ValueError(f"{entry.model} needs base_url: the server's URL, ending in /v1")
    check_base_url(entry.base_url)
    if entry.adapter is not None or entry.train is not None:
        raise ValueError("a served model cannot take an adapter or be trained here")
    engine_settings = [name for b in BACKENDS.values() if b.engine for name in b.settings]
    if entry.backend != AUTO_BACKEND or any(getattr(entry, n) is not None for n in engine_settings):
        raise ValueError("a served model runs on its server: no backend or vllm settings")


# The backends medharness ships, in the order specs are matched and engines are listed.
register(Backend("hf", "medharness.models.hf:load"))
register(
    Backend(
        "fake",
        "medharness.models.fake:load",
        prefix="fake:",
        check=check_fake_entry,
        label=lambda rest: Path(rest).expanduser().stem,
    )
)
register(
    Backend(
        "openai",
        "medharness.models.endpoint:load",
        prefix="openai:",
        settings=("base_url", "api_key_env", "requests"),
        misplaced="base_url, api_key_env and requests belong to openai:NAME models",
        check=check_endpoint_entry,
    )
)
register(
    Backend(
        "vllm",
        "medharness.models.vllm:load",
        settings=("vllm",),
        misplaced="vllm: settings need backend: vllm",
    )
)
