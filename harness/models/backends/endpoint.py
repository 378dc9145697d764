"""``openai:NAME``: a model an OpenAI-compatible server serves, and the entry settings that
say where the server is and how it is asked."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field

from medharness.core.validation import Strict
from medharness.models.specs import AUTO_BACKEND, BACKENDS, Backend, endpoint_model

ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"


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


class EndpointSettings(Strict):
    """The model entry's keys for this backend: the server's OpenAI-compatible base URL
    (ending in /v1), the environment variable holding its API key (read at each request,
    never written), and how requests are sent (concurrency, timeout, retries, budget)."""

    base_url: str | None = None
    api_key_env: Annotated[str, Field(pattern=ENV_NAME)] | None = None
    requests: EndpointRequests | None = None


def check_endpoint_entry(entry: Any) -> None:
    if not endpoint_model(entry.model):
        raise ValueError("openai: needs the served model's name, as openai:NAME")
    if entry.base_url is None:
        raise ValueError(f"{entry.model} needs base_url: the server's URL, ending in /v1")
    check_base_url(entry.base_url)
    if entry.adapter is not None or entry.train is not None:
        raise ValueError("a served model cannot take an adapter or be trained here")
    engine_settings = [name for b in BACKENDS.values() if b.engine for name in b.setting_names]
    if entry.backend != AUTO_BACKEND or any(getattr(entry, n) is not None for n in engine_settings):
        raise ValueError("a served model runs on its server: no backend or vllm settings")


BACKEND = Backend(
    "openai",
    "medharness.models.endpoint:load",
    prefix="openai:",
    settings=EndpointSettings,
    misplaced="base_url, api_key_env and requests belong to openai:NAME models",
    check=check_endpoint_entry,
    answer_neutral=("requests",),
)
