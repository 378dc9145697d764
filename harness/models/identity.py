"""What a model spec's answers depend on, known before the model is loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medharness.core.cache import weights_sha256
from medharness.core.io import sha256_file
from medharness.models.backends.endpoint import EndpointRequests, EndpointSettings, check_base_url
from medharness.models.builtin import builtin_model_dir
from medharness.models.loading import LoadSettings
from medharness.models.specs import BUILTIN_MODEL, endpoint_model, fake_script


def weights_identity(spec: str) -> str | None:
    """sha256 of the weights a spec names, where they are local files (cached by mtime);
    None for hub ids, whose revision is only known once loaded."""
    script = fake_script(spec)
    if script is not None:
        return sha256_file(script) if script.is_file() else None
    folder = builtin_model_dir() if spec == BUILTIN_MODEL else Path(spec).expanduser()
    return weights_sha256(folder) if folder.is_dir() else None


def served_identity(spec: str, settings: LoadSettings) -> dict[str, Any] | None:
    """What the server of an ``openai:NAME`` spec says of the model (None for other specs);
    asking also proves the server is there before any work is done."""
    served, own = endpoint_model(spec), settings.of_backend(EndpointSettings)
    if served is None or own.base_url is None:
        return None
    from medharness.models.endpoint import Endpoint, server_identity

    requests = own.requests or EndpointRequests()
    endpoint = Endpoint(check_base_url(own.base_url), own.api_key_env, requests)
    return server_identity(endpoint, served)
