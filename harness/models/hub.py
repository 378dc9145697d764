"""Hub ids when the hub cannot be reached: answered at once, in one line.

Without this, transformers retries a model id for a minute or more and ends in an error
about something else. Whether the hub is reachable is decided once per process: an offline
variable (HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE) says so, else one connection attempt to the
hub's host, made only when a config names a hub id.
"""

from __future__ import annotations

import os
import socket
from functools import cache
from urllib.parse import urlparse

from medharness.core.errors import UserError

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
TRUE = {"1", "ON", "YES", "TRUE"}


@cache
def offline_reason() -> str | None:
    """Why the hub cannot be reached, or None when it can."""
    for variable in OFFLINE_VARIABLES:
        if os.environ.get(variable, "").strip().upper() in TRUE:
            return f"{variable} is set"
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or ""
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError as exc:
        return f"{host} cannot be reached: {exc.strerror or exc}"
    return None


def is_cached(repo_id: str, filename: str) -> bool:
    """Whether the local hub cache holds this repository's ``filename``."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, filename)
    except ValueError:  # not a valid repo id
        return False
    return isinstance(found, str)


def require_hub_model(repo_id: str, what: str = "model") -> None:
    """Refuse at once a hub id that can be neither downloaded nor read from the cache; when
    the hub is out of reach but the cache has it, load from the cache without retries."""
    reason = offline_reason()
    if reason is None:
        return
    if is_cached(repo_id, "adapter_config.json" if what == "adapter" else "config.json"):
        os.environ["HF_HUB_OFFLINE"] = "1"
        return
    raise UserError(
        f"could not load {what} {repo_id!r}: it is a hub id, the local hub cache does not "
        f"have it and the hub is offline ({reason}); pass a local folder, or download it "
        f"first where there is a network (huggingface-cli download {repo_id})"
    )
