"""Hostile answers: medharness's one HTTP client against servers on loopback (a redirect to
another origin, a server that trickles, an answer too large, an error that echoes the key, a
key in the URL, a Retry-After that is no number, impossible log-probs), judges that write
monstrous numbers, and ports that are none."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import medharness.models.endpoint as endpoint_module
from medharness.cli import main
from medharness.core.errors import UserError
from medharness.core.http import redact
from medharness.models.backends.endpoint import EndpointRequests, check_base_url
from medharness.models.endpoint import (
    Endpoint,
    continuation_logprob,
    forced_logprob,
    next_token_logprobs,
    one_token_after,
    retry_after,
)
from medharness.tasks.judging.rubric import load_rubric
from medharness.tasks.judging.verdicts import parse_verdict

KEY = "sk-test-0123456789abcdef"
MODELS = json.dumps({"data": [{"id": "m", "object": "model"}]}).encode()
Respond = Callable[[BaseHTTPRequestHandler], None]


@contextmanager
def served(respond: Respond) -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A loopback server answering every GET with ``respond``; the headers of each request."""
    seen: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append({k.lower(): v for k, v in self.headers.items()})
            respond(self)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def models(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(MODELS)))
    handler.end_headers()
    handler.wfile.write(MODELS)


def endpoint(base: str, **requests: object) -> Endpoint:
    settings = EndpointRequests.model_validate({"retries": 0, "backoff_s": 0, **requests})
    return Endpoint(f"{base}/v1", "MEDHARNESS_TEST_KEY", settings)


@pytest.fixture(autouse=True)
def key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDHARNESS_TEST_KEY", KEY)


@pytest.mark.parametrize("same_origin", [False, True])
def test_the_key_never_follows_a_redirect_to_another_origin(same_origin: bool) -> None:
    with served(models) as (elsewhere, reached):

        def redirect(handler: BaseHTTPRequestHandler) -> None:
            if handler.path.startswith("/moved"):
                return models(handler)
            handler.send_response(307)
            handler.send_header("Location", "/moved" if same_origin else f"{elsewhere}/v1/models")
            handler.send_header("Content-Length", "0")
            handler.end_headers()

        with served(redirect) as (base, asked):
            answer = endpoint(base).request("/models")
    assert answer["data"][0]["id"] == "m"
    assert asked[0]["authorization"] == f"Bearer {KEY}"
    if same_origin:  # the server the user named: the key goes along
        assert asked[1]["authorization"] == f"Bearer {KEY}" and not reached
    else:  # another port: followed, without the key
        assert len(reached) == 1 and "authorization" not in reached[0]


def test_a_server_that_trickles_cannot_hold_a_request_past_its_deadline() -> None:
    def trickle(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        for _ in range(40):  # a byte every 0.1 s: each read is quick, the whole is not
            handler.wfile.write(b" ")
            handler.wfile.flush()
            time.sleep(0.1)

    with served(trickle) as (base, _):
        started = time.monotonic()
        with pytest.raises(UserError, match="did not arrive whole before the deadline"):
            endpoint(base, timeout_s=0.5).request("/models")
    assert time.monotonic() - started < 3


def test_an_answer_larger_than_the_cap_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(endpoint_module, "MAX_ANSWER_BYTES", 1000)

    def large(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.end_headers()  # no Content-Length: only reading tells
        handler.wfile.write(b"[" + b"1," * 5000 + b"1]")

    with served(large) as (base, _), pytest.raises(UserError, match="grew past 1,000 bytes"):
        endpoint(base).request("/models")


def test_an_error_that_echoes_the_key_is_redacted() -> None:
    def echo(handler: BaseHTTPRequestHandler) -> None:
        body = json.dumps({"error": {"message": f"bad key {handler.headers['Authorization']}"}})
        handler.send_response(401)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body.encode())

    with served(echo) as (base, _), pytest.raises(UserError) as refused:
        endpoint(base).request("/models")
    assert KEY not in str(refused.value) and "bad key Bearer [redacted]" in str(refused.value)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000/v1?api_key=sk-1", "http://u:sk-1@127.0.0.1/v1", "http://h/v1#k"]
)
def test_a_base_url_holding_credentials_or_a_query_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="must not hold credentials, a query string"):
        check_base_url(url)


@pytest.mark.parametrize("value", ["soon", "inf", "nan", "Mon, 99 Foo 2026", "-5"])
def test_a_retry_after_that_is_no_delay_is_ignored_not_a_crash(value: str) -> None:
    waited = retry_after({"Retry-After": value})
    assert waited is None or waited == 0.0


def test_redaction_cuts_every_secret_and_ignores_empty_ones() -> None:
    assert redact(f"a {KEY} b {KEY}", [KEY, None, ""]) == "a [redacted] b [redacted]"


def echoed(values: list[object], offsets: list[object] | None = None) -> dict[str, object]:
    starts = offsets if offsets is not None else [0, 5, 9, 12][: len(values)]
    return {"choices": [{"logprobs": {"token_logprobs": values, "text_offset": starts}}]}


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (echoed([None, -1.0, 0.7]), "a positive log-prob (0.7)"),
        (echoed([None, -1.0, float("inf")]), "a log-prob of inf"),
        (echoed([None, float("nan"), -1.0]), "a log-prob of nan"),
        (echoed([None, -1.0, "-2"]), "a log-prob that is not a number"),
        (echoed([None, -1.0, -2.0], [0, 9, 5]), "text_offsets that go backwards"),
        (echoed([None, -1.0, -2.0], [0, 5.5, 9]), "a text_offset that is not a whole number"),
    ],
)
def test_echoed_log_probs_that_cannot_be_log_probabilities_are_refused(
    answer: dict[str, object], says: str
) -> None:
    with pytest.raises(UserError, match="cannot be log-probabilities: " + re.escape(says)):
        continuation_logprob(answer, context_chars=5, prompt_chars=12)


@pytest.mark.parametrize(
    ("value", "says"), [(0.7, "a positive log-prob (0.7)"), (float("nan"), "a log-prob of nan")]
)
def test_top_log_probs_that_cannot_be_log_probabilities_are_refused(
    value: float, says: str
) -> None:
    answer = {"choices": [{"logprobs": {"top_logprobs": [{" A": -1.0, " B": value}]}}]}
    with pytest.raises(
        UserError, match="top log-probs cannot be log-probabilities: " + re.escape(says)
    ):
        next_token_logprobs(answer)


def forced(token: str, value: object) -> dict[str, object]:
    return {"choices": [{"logprobs": {"tokens": [token], "token_logprobs": [value]}}]}


def test_a_forced_option_is_read_only_where_its_token_came() -> None:
    assert forced_logprob(forced(" B", -1.5), " B", 33) == -1.5
    assert forced_logprob(forced("token_id:33", -1.5), " B", 33) == -1.5  # vLLM's ids as text
    assert forced_logprob(forced(" A", -0.2), " B", 33) is None  # the bias was ignored
    assert forced_logprob(forced(" B", None), " B", 33) is None
    assert forced_logprob({"choices": [{"text": " B"}]}, " B", 33) is None  # no log-probs
    with pytest.raises(UserError, match=re.escape("forced log-probs cannot be log-prob")):
        forced_logprob(forced(" B", 0.7), " B", 33)


def test_an_option_is_forced_only_where_it_is_one_token_after_the_question() -> None:
    assert one_token_after([5, 6], [5, 6, 7]) == 7
    assert one_token_after([5, 6], [5, 6, 7, 8]) is None  # two tokens
    assert one_token_after([5, 6], [5, 9, 7]) is None  # merged across the boundary
    assert one_token_after([5, 6], [5, 6]) is None


def test_possible_log_probs_still_sum() -> None:
    total = continuation_logprob(echoed([None, -1.0, -2.0, -0.5]), context_chars=5, prompt_chars=12)
    assert total == pytest.approx(-3.0)  # tokens ending past the context, starting before 12


@pytest.mark.parametrize(
    "output",
    [
        "correctness: " + "9" * 5000,
        '{"correctness": ' + "9" * 5000 + "}",
        '{"correctness": "' + "4" * 5000 + '"}',
        "{" * 100_000 + "}" * 100_000,
    ],
)
def test_a_judge_writing_monstrous_numbers_or_nests_gives_no_score_and_no_crash(
    output: str,
) -> None:
    rubric = load_rubric("medical-qa", Path.cwd())
    assert parse_verdict(output + "\ncompleteness: 3", rubric, "x").scores == {"completeness": 3}


@pytest.mark.parametrize("value", ["70000", "0", "-1", "http"])
def test_a_port_that_is_no_port_is_a_usage_error(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["view", "some-run", "--port", value])
    assert stopped.value.code == 2
    assert "argument --port" in capsys.readouterr().err


def test_a_hub_error_that_echoes_the_token_is_redacted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub

    from medharness.reports.publish import upload

    token = "hf_" + "x1y2z3" * 6
    monkeypatch.setenv("HF_TOKEN", token)

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError(f"401 Unauthorized for headers {{'authorization': 'Bearer {token}'}}")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", refuse)
    with pytest.raises(UserError) as refused:
        upload(tmp_path, "me/run", private=True, message="m")
    assert token not in str(refused.value) and "Bearer [redacted]" in str(refused.value)
