"""A small OpenAI-compatible server on 127.0.0.1 for the endpoint backend's tests.

It answers ``/v1/models``, ``/v1/chat/completions``, ``/v1/completions`` (with ``echo`` and
``logprobs``, the way vLLM does: whitespace-led tokens, their character offsets, no log-prob
for the first; without ``echo``, the top log-probs of the token after the prompt, or with
``logit_bias`` the biased token and its log-prob from before the bias, vLLM's default
``raw_logprobs``; a list of prompts answered one choice each) and vLLM's ``/tokenize`` at the
server's root (those tokens' ids) deterministically, records every request, and injects the
faults a test schedules: 429 with Retry-After, 500, a hang past the client's timeout,
malformed JSON, or an answer without log-probs; and refuses what a test says it does not take
(more top log-probs than ``max_logprobs``, lists of prompts, ``logit_bias``), as a server
would: HTTP 400; or answers a forced token's log-prob after the bias (``processed_logprobs``),
or has no ``/tokenize`` (404).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAVOURED = " B"  # the option the stub's log-probs favour
NEXT_TOKENS = (" A", " B", " C", " D", " E", ".")  # what may follow a prompt
FAULTS = ("429", "500", "hang", "malformed")


@dataclass
class Fault:
    kind: str  # one of FAULTS
    count: int  # how many completion requests meet it (from the first after ``skip``)
    skip: int = 0  # completion requests served normally before it starts


@dataclass
class StubState:
    model: str = "stub"
    root: str = "stub-weights-v1"
    logprobs: bool = True
    retry_after: str = "0"
    hang_s: float = 2.0
    max_logprobs: int = 20  # top log-probs a request may ask for (vLLM's default)
    prompt_lists: bool = True  # whether a request may send a list of prompts
    logit_bias: bool = True  # whether a request may send logit_bias
    tokenize: bool = True  # whether the server has /tokenize
    # whether a biased token's log-prob is after the bias (vLLM's processed_logprobs)
    processed_logprobs: bool = False
    # prompts holding this have " D" outside their top log-probs (a rare next token)
    rare_option_in: str = "symptom 1."
    faults: list[Fault] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)  # path, body, headers, at
    vocabulary: dict[str, int] = field(default_factory=dict)  # token ids, as /tokenize gave
    lock: threading.Lock = field(default_factory=threading.Lock)

    def token_id(self, token: str) -> int:
        with self.lock:
            return self.vocabulary.setdefault(token, 1000 + len(self.vocabulary))

    def token_of(self, token_id: int) -> str:
        with self.lock:
            return next(token for token, known in self.vocabulary.items() if known == token_id)

    def completions(self) -> list[dict[str, Any]]:
        """The completion requests received (chat and text), in arrival order."""
        return [r for r in self.requests if r["path"].endswith("completions")]

    def fault_for(self, number: int) -> str | None:
        for fault in self.faults:
            if fault.skip <= number < fault.skip + fault.count:
                return fault.kind
        return None


def token_logprob(token: str) -> float:
    """A log-prob of the token wherever it comes; those of NEXT_TOKENS sum below 1."""
    return -0.5 if token == FAVOURED else -2.5 - len(token.strip()) / 10


def tokens_of(prompt: str) -> list[str]:
    return re.findall(r"\s*\S+", prompt)


def echo_logprobs(prompt: str) -> dict[str, Any]:
    tokens = [*tokens_of(prompt), "."]
    offsets, at = [], 0
    for token in tokens:
        offsets.append(at)
        at += len(token)
    values: list[float | None] = [None] + [token_logprob(token) for token in tokens[1:]]
    return {"tokens": tokens, "text_offset": offsets, "token_logprobs": values}


def next_token_logprobs(state: StubState, prompt: str, count: int) -> dict[str, Any]:
    """The one generated token (the likeliest) and the ``count`` likeliest after the prompt."""
    candidates = [
        token for token in NEXT_TOKENS if not (token == " D" and state.rare_option_in in prompt)
    ]
    top = sorted(candidates, key=token_logprob, reverse=True)[:count]
    return {
        "tokens": [top[0]],
        "text_offset": [len(prompt)],
        "token_logprobs": [token_logprob(top[0])],
        "top_logprobs": [{token: token_logprob(token) for token in top}],
    }


def forced_logprobs(state: StubState, prompt: str, bias: dict[str, float]) -> dict[str, Any]:
    """The token ``logit_bias`` favours most generated after the prompt, with its log-prob
    before the bias (after it, where the server says processed: as good as certain)."""
    token = state.token_of(int(max(bias, key=lambda token_id: bias[token_id])))
    value = -1e-7 if state.processed_logprobs else token_logprob(token)
    return {
        "tokens": [token],
        "text_offset": [len(prompt)],
        "token_logprobs": [value],
        "top_logprobs": [{token: value}],
    }


def tokenized(state: StubState, body: dict[str, Any]) -> dict[str, Any]:
    """vLLM's /tokenize answer for a prompt."""
    tokens = [state.token_id(token) for token in tokens_of(body["prompt"])]
    return {"count": len(tokens), "max_model_len": 2048, "tokens": tokens}


def chat_reply(message: str) -> str:
    if '"criteria_met"' in message:  # a HealthBench grader: positive items met, others not
        item = message.split("# Rubric item", 1)[1].split("# Instructions", 1)[0]
        met = "true" if "[-" not in item else "false"
        return f'```json\n{{"explanation": "stub grader", "criteria_met": {met}}}\n```'
    if "Answer with" in message:  # generate-then-parse multiple choice
        return "The answer is B." if "symptom 1" not in message else "I cannot tell."
    return f"Stub answer about {message.split('?')[0][-40:]}."


REASONED = "The rash and the fever point to C."  # returned in a field of its own, 9 tokens


def cot_reply(message: str) -> dict[str, Any]:
    """Chain-of-thought answers as reasoning servers send them: one cut off at max_tokens
    inside its trace, one with the trace in ``reasoning_content`` (vLLM's reasoning parser,
    DeepSeek's API), the rest reasoning in the text before a final line."""
    if "symptom 1." in message:
        return {"content": "<think>Weighing A against B, the", "finish_reason": "length"}
    if "symptom 2." in message:
        return {"content": "Final Answer: C", "reasoning_content": REASONED, "reasoning_tokens": 9}
    return {"content": "The murmur suggests B.\nFinal Answer: B"}


def chat_answer(message: str) -> dict[str, Any]:
    reply = cot_reply(message) if "Final Answer: X" in message else {"content": chat_reply(message)}
    said = {"role": "assistant", "content": reply["content"]}
    if "reasoning_content" in reply:
        said["reasoning_content"] = reply["reasoning_content"]
    choice = {"index": 0, "message": said, "finish_reason": reply.get("finish_reason", "stop")}
    usage = {"completion_tokens": len(reply["content"].split()) + reply.get("reasoning_tokens", 0)}
    if "reasoning_tokens" in reply:
        usage["completion_tokens_details"] = {"reasoning_tokens": reply["reasoning_tokens"]}
    return {"choices": [choice], "usage": usage}


def refusal(state: StubState, body: dict[str, Any]) -> str | None:
    """Why the server does not take a completions request, if it does not."""
    if isinstance(body.get("prompt"), list) and not state.prompt_lists:
        return "prompt must be a string"
    if body.get("logprobs", 0) > state.max_logprobs:
        return f"logprobs must be at most {state.max_logprobs}"
    if "logit_bias" in body and not state.logit_bias:
        return "logit_bias is not supported"
    return None


def completion_choice(state: StubState, body: dict[str, Any], prompt: str, index: int) -> Any:
    if body.get("echo"):
        logprobs = echo_logprobs(prompt) if state.logprobs else None
        return {"index": index, "text": prompt + ".", "logprobs": logprobs}
    if not state.logprobs:
        logprobs = None
    elif body.get("logit_bias"):
        logprobs = forced_logprobs(state, prompt, body["logit_bias"])
    else:
        logprobs = next_token_logprobs(state, prompt, body.get("logprobs", 0))
    text = logprobs["tokens"][0] if logprobs else FAVOURED
    return {"index": index, "text": text, "logprobs": logprobs}


def answer(state: StubState, path: str, body: dict[str, Any]) -> dict[str, Any]:
    if path.endswith("/chat/completions"):
        return chat_answer(body["messages"][-1]["content"])
    prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
    return {"choices": [completion_choice(state, body, p, i) for i, p in enumerate(prompts)]}


@dataclass
class Stub:
    url: str  # the base URL, ending in /v1
    state: StubState


def serve(state: StubState) -> Iterator[Stub]:
    """Run the stub until the generator is closed (a fixture's body)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.record(None)
            if self.path.rstrip("/") != "/v1/models":
                self.send_json(404, {"error": {"message": "not found"}})
                return
            listed = {"id": state.model, "object": "model", "owned_by": "stub"}
            listed.update(root=state.root, created=int(time.time() * 1000))
            self.send_json(200, {"object": "list", "data": [listed]})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length))
            number = self.record(body)
            if self.path == "/tokenize":  # vLLM's, at the server's root; never a fault
                if state.tokenize:
                    self.send_json(200, tokenized(state, body))
                else:
                    self.send_json(404, {"detail": "Not Found"})
                return
            fault = state.fault_for(number)
            refused = None if self.path.endswith("chat/completions") else refusal(state, body)
            if refused is not None:
                self.send_json(400, {"error": {"message": refused}})
            elif fault == "429":
                self.send_json(429, {"error": {"message": "slow down"}}, state.retry_after)
            elif fault == "500":
                self.send_json(500, {"error": {"message": "engine crashed"}})
            elif fault == "hang":
                time.sleep(state.hang_s)
                self.send_json(200, answer(state, self.path, body))
            elif fault == "malformed":
                self.send_bytes(200, b'{"choices": [')
            else:
                self.send_json(200, answer(state, self.path, body))

        def record(self, body: dict[str, Any] | None) -> int:
            with state.lock:
                number = len(state.completions())
                state.requests.append(
                    {
                        "path": self.path,
                        "body": body,
                        "headers": dict(self.headers),
                        "at": time.monotonic(),
                    }
                )
            return number

        def send_json(self, status: int, data: Any, retry_after: str | None = None) -> None:
            headers = {"Retry-After": retry_after} if retry_after is not None else {}
            self.send_bytes(status, json.dumps(data).encode(), headers)

        def send_bytes(self, status: int, data: bytes, headers: dict[str, str] = {}) -> None:  # noqa: B006
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.handle_error = lambda request, address: None  # type: ignore[method-assign]  # a client gone after its timeout
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield Stub(f"http://127.0.0.1:{httpd.server_address[1]}/v1", state)
    finally:
        httpd.shutdown()
        httpd.server_close()
