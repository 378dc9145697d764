"""The one way medharness speaks HTTP: endpoints, judges served behind them, and data pulls.

Every request gets the same rules, so a new surface inherits them instead of writing its own:
credentials never follow a redirect to another origin (the redirect is followed without
them), one deadline bounds the whole request (a server trickling a byte at a time cannot hold
a run past it), the answer has a size cap, and no text this module returns holds a secret the
caller named.
"""

from __future__ import annotations

import http.client
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.message import Message
from typing import Any, Literal
from urllib.parse import urlsplit

CHUNK = 1 << 16
CREDENTIAL_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "x-api-key", "api-key"}
)
REDACTED = "[redacted]"


class HttpFailure(Exception):
    """No whole answer: the connection failed (``connection``), the deadline passed
    (``deadline``), or the answer grew past its cap (``size``)."""

    def __init__(self, reason: str, kind: Literal["connection", "deadline", "size"]) -> None:
        super().__init__(reason)
        self.kind = kind


class HttpStatus(Exception):
    """The server answered with an error status; its body (capped) and headers are kept."""

    def __init__(self, status: int, reason: str, headers: Message, body: bytes) -> None:
        super().__init__(f"HTTP {status} {reason}")
        self.status, self.reason, self.headers, self.body = status, reason, headers, body


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Message
    body: bytes  # empty where a sink took the body


def origin(url: str) -> tuple[str, str, int | None]:
    """Scheme, host and port: what a credential is sent to."""
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default


class CredentialsStayHome(urllib.request.HTTPRedirectHandler):
    """urllib copies every request header onto a redirect; to another origin (scheme, host
    or port) the credential headers are dropped, so a key goes only where the user sent it."""

    def redirect_request(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request | None:
        follow = super().redirect_request(req, fp, code, msg, headers, newurl)
        if follow is not None and origin(newurl) != origin(req.full_url):
            for name in [n for n in follow.headers if n.lower() in CREDENTIAL_HEADERS]:
                del follow.headers[name]
            for name in [n for n in follow.unredirected_hdrs if n.lower() in CREDENTIAL_HEADERS]:
                del follow.unredirected_hdrs[name]
        return follow


OPENER = urllib.request.build_opener(CredentialsStayHome())


def send(
    url: str,
    *,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    deadline_s: float,
    max_bytes: int,
    sink: Callable[[int, Message], Callable[[bytes], None]] | None = None,
    stall_s: float | None = None,
) -> Answer:
    """One request, whole within ``deadline_s`` and at most ``max_bytes`` of answer. A
    ``sink``, given the status and headers, returns what takes the body chunk by chunk
    instead of it being kept (a download writes it to disk). ``stall_s``, where shorter than
    the deadline, bounds the wait for a connection or for each next piece (a long download's
    server gone silent fails in seconds, not at its deadline). Raises HttpStatus for an error
    status, HttpFailure for no whole answer."""
    deadline = time.monotonic() + deadline_s
    wait_s = min(deadline_s, stall_s or deadline_s)
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with OPENER.open(request, timeout=wait_s) as response:
            write = sink(response.status, response.headers) if sink else None
            body = read_bounded(response, deadline, max_bytes, write)
            return Answer(response.status, response.headers, body)
    except urllib.error.HTTPError as error:
        body = read_bounded(error, deadline, min(max_bytes, CHUNK), None, partial_ok=True)
        raise HttpStatus(error.code, str(error.reason), error.headers, body) from None
    except TimeoutError:
        raise HttpFailure(f"no answer within {wait_s:g} s", "deadline") from None
    except (OSError, http.client.HTTPException, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        if isinstance(reason, TimeoutError | socket.timeout):
            raise HttpFailure(f"no answer within {wait_s:g} s", "deadline") from None
        raise HttpFailure(f"connection failed ({describe(reason)})", "connection") from None


def read_bounded(
    response: Any,
    deadline: float,
    max_bytes: int,
    sink: Callable[[bytes], None] | None,
    partial_ok: bool = False,
) -> bytes:
    """The body, read as it arrives and refused once it passes the deadline or the cap."""
    declared = response.headers.get("Content-Length") if response.headers else None
    if declared is not None and declared.strip().isdigit() and int(declared) > max_bytes:
        if partial_ok:
            return b""
        raise HttpFailure(f"the answer is {int(declared):,} bytes, more than {max_bytes:,}", "size")
    read = getattr(response, "read1", None) or response.read
    kept: list[bytes] = []
    size = 0
    while True:
        if time.monotonic() > deadline:
            if partial_ok:
                break
            raise HttpFailure("the answer did not arrive whole before the deadline", "deadline")
        try:
            chunk = read(CHUNK)
        except (OSError, http.client.HTTPException):
            if partial_ok:
                break
            raise
        if not chunk:
            break
        size += len(chunk)
        if size > max_bytes:
            if partial_ok:
                break
            raise HttpFailure(f"the answer grew past {max_bytes:,} bytes", "size")
        if sink is not None:
            sink(chunk)
        else:
            kept.append(chunk)
    return b"".join(kept)


def describe(reason: object) -> str:
    text = str(reason).strip()
    return text.splitlines()[0] if text else type(reason).__name__


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every secret the caller holds cut out (a server that echoes the key in
    an error must not put it in a message, a log or a file)."""
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text
