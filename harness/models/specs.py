"""Model specs as users write them: the one place that tells the kinds apart.

A spec is one of ``smollm2-135m-instruct`` (the built-in model), ``fake:PATH`` (a scripted
model), ``openai:NAME`` (a model an OpenAI-compatible server serves), a local directory, or a
hub id. How an endpoint is called and how vLLM spreads a model over GPUs are settings of the
entry, defined here so the config and the backends share them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field

from medharness.core.validation import Strict

BUILTIN_MODEL = "smollm2-135m-instruct"
FAKE_PREFIX = "fake:"


def fake_script(spec: str) -> Path | None:
    """The script path of a ``fake:PATH`` spec; None for any other spec."""
    if not spec.startswith(FAKE_PREFIX):
        return None
    return Path(spec[len(FAKE_PREFIX) :]).expanduser()


def looks_like_path(spec: str) -> bool:
    """Whether a spec that names no existing folder was meant as a path, not a hub id."""
    return spec.startswith(("/", ".", "~")) or spec.count("/") > 1 or os.sep in spec[:1]


def is_hub_id(spec: str) -> bool:
    """A spec that names a hub repository: not built in, not fake, not a local folder."""
    return (
        spec != BUILTIN_MODEL
        and fake_script(spec) is None
        and endpoint_model(spec) is None
        and not looks_like_path(spec)
        and not Path(spec).expanduser().exists()
    )


ENDPOINT_PREFIX = "openai:"


def endpoint_model(spec: str) -> str | None:
    """The served model name of an ``openai:NAME`` spec; None for any other spec."""
    if not spec.startswith(ENDPOINT_PREFIX):
        return None
    return spec[len(ENDPOINT_PREFIX) :]


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
        return FAKE_PREFIX + str(script.resolve())
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec
