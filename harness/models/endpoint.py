"""The endpoint backend: a model an OpenAI-compatible server already serves (vLLM, TGI,
SGLang, Ollama, a llama.cpp server, a hosted API), as a model entry ``model: openai:NAME``
with a ``base_url``.

Generation goes through chat completions, so the server applies its own chat template.
Multiple-choice log-likelihoods come from the completions endpoint, one request per question
where the server allows: where every option is one token after the question (" A".." D"),
they are read off the top log-probs of the token after it; where they are not all among
those, each such option is forced as that token (``logit_bias``, its id from the server's
``/tokenize``) after the question alone, so the server's prefix cache shares the question
among its options; else the options go as one list of prompts with ``echo`` and
``logprobs`` (lm-eval's ``local-completions`` request), each scored by the log-probs of the
prompt tokens that hold its continuation; a server that refuses these is asked one option
per request, as lm-eval does. A server that returns no log-probs is refused with the
alternative named (``multiple_choice: generate``). Requests run ``concurrency`` at a time;
429, 5xx, timeouts, dropped connections and unreadable JSON are retried with exponential
backoff, anything else (and a retry budget spent) is one error line. The API key is read
from the environment variable the entry names at each request and is written nowhere.
"""

from __future__ import annotations

import email.utils
import itertools
import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from medharness.core.errors import UserError, first_line
from medharness.core.http import HttpFailure, HttpStatus, redact, send
from medharness.models.backends.endpoint import (
    EndpointRequests,
    EndpointSettings,
    check_base_url,
)
from medharness.models.base import Completion, Progress, Prompt, Sampling
from medharness.models.loading import LoadRequest, LoadSettings
from medharness.models.prompts import chat_messages

# What /models says of a model that stays the same between requests (``created`` and the
# permission ids change on every call); it keys cached answers and the manifest records it.
SERVER_FIELDS = ("id", "object", "owned_by", "root", "parent", "max_model_len")
RETRYABLE_STATUS = frozenset({408, 409, 425, 429}) | frozenset(range(500, 600))
CHAT_TEMPLATE = "the server's own (chat completions)"
MAX_ANSWER_BYTES = 64 << 20  # far above any chat or echoed-logprobs answer
# top log-probs asked for with a question's next token: vLLM's default max_logprobs
TOP_LOGPROBS = 20
# what a server that does not take a request's form answers: bad request, unprocessable
NOT_TAKEN = frozenset({400, 422})
# what a server without a usable /tokenize answers: also not found, method not allowed
NO_TOKENIZE = NOT_TAKEN | {404, 405}
# a forced option's logit bias: OpenAI's largest, far above any gap between two logits
FORCING_BIAS = 100
# how far the probabilities of a question's distinct forced options may sum past 1 before
# they are taken for log-probs after the bias (each near 0, so near 1 each), not before it
PROBABILITY_SLACK = 0.01


class NotStarted(Exception):
    """A request not sent because another of its batch had failed."""


class Retryable(Exception):
    """A failure worth sending the request again for; ``wait_s`` is the server's Retry-After."""

    def __init__(self, reason: str, wait_s: float | None = None) -> None:
        super().__init__(reason)
        self.wait_s = wait_s


class Refused(UserError):
    """The server answered, and the answer means no: a 4xx other than a rate limit."""

    def __init__(self, message: str, status: int, detail: str) -> None:
        super().__init__(message)
        self.status, self.detail = status, detail


class NoPromptLogprobs(UserError):
    """The server does not return prompt log-probs (most hosted chat APIs)."""


def refuse_recorded_keys(
    run_dir: Path,
    models: Iterable[tuple[str, LoadSettings]],
    named: Collection[str],
    how_to_name: str,
) -> None:
    """A run folder may come from anyone: of its ``models`` (what, its entry's settings), a
    server gets the user's API key only where the user names its URL again (``named``, in
    the words ``how_to_name`` gives), never from the folder alone."""
    trusted = {url.rstrip("/") for url in named}
    for what, settings in models:
        own = settings.of_backend(EndpointSettings)
        key_env, base_url = own.api_key_env, own.base_url
        if key_env is not None and (base_url or "").rstrip("/") not in trusted:
            raise UserError(
                f"{run_dir}: {what} would send ${key_env} to {base_url}, a server only the "
                f"run folder names; {how_to_name} to send your key there"
            )


@dataclass
class Endpoint:
    """HTTP to one server: JSON requests with a timeout, retries and a request budget."""

    base_url: str
    api_key_env: str | None
    settings: EndpointRequests
    sent: int = 0  # requests this process sent, against ``settings.max_requests``
    bar: Any = None  # requests done, with their rate
    lock: threading.Lock = field(default_factory=threading.Lock)

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key_env is not None:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise UserError(f"{self.base_url}: ${self.api_key_env} (api_key_env) is not set")
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def request(
        self,
        path: str,
        payload: dict[str, Any] | None = None,
        read: Callable[[Any], Any] = lambda answer: answer,
    ) -> Any:
        """One request (a GET without payload) to ``path`` under the base URL (or to a whole
        URL of the same server), sent again on a retryable failure or an answer ``read``
        finds the wrong shape (it raises Retryable); what ``read`` makes of the JSON answer."""
        url = path if path.startswith(("http://", "https://")) else f"{self.base_url}{path}"
        attempt = 0
        while True:
            try:
                return read(self._once(url, payload))
            except Retryable as failure:
                if attempt == self.settings.retries:
                    kept = "; finished samples are kept, run the same command again to continue"
                    raise UserError(
                        f"{url}: {failure} after {self.settings.retries} retries"
                        + (kept if payload is not None else "")
                    ) from None
                backoff = self.settings.backoff_s * 2**attempt
                pause = min(
                    failure.wait_s if failure.wait_s is not None else backoff,
                    self.settings.max_backoff_s,
                )
                attempt += 1
                tqdm.write(
                    f"{url}: {failure}; retry {attempt}/{self.settings.retries} in {pause:.3g} s",
                    file=sys.stderr,
                )
                time.sleep(pause)

    def _once(self, url: str, payload: dict[str, Any] | None) -> Any:
        """One request through medharness's HTTP client: the whole request within
        ``timeout_s``, the key never sent to another origin a redirect names, and never in a
        message (a server that echoes it is redacted)."""
        data = None if payload is None else json.dumps(payload).encode()
        secrets = [os.environ.get(self.api_key_env)] if self.api_key_env else []
        try:
            answer = send(
                url,
                data=data,
                headers=self.headers(),
                deadline_s=self.settings.timeout_s,
                max_bytes=MAX_ANSWER_BYTES,
            )
        except HttpStatus as error:
            detail = redact(server_message(error.body), secrets)
            if error.status in RETRYABLE_STATUS:
                raise Retryable(f"HTTP {error.status}", retry_after(error.headers)) from None
            hint = f" (check ${self.api_key_env})" if error.status in (401, 403) else ""
            raise Refused(
                f"{url}: HTTP {error.status}{hint}: {detail}", error.status, detail
            ) from None
        except HttpFailure as failure:
            if failure.kind == "size":
                raise UserError(f"{url}: {failure}") from None
            raise Retryable(redact(str(failure), secrets)) from None
        try:  # a server that echoes the key in its answer does not get it into a log
            return json.loads(redact(answer.body.decode("utf-8", errors="replace"), secrets))
        except (ValueError, RecursionError):
            raise Retryable("the answer was not JSON") from None

    def post_all(
        self,
        path: str,
        payloads: Sequence[dict[str, Any]],
        read: Callable[[int, Any], Any],
        done: Callable[[], None] | None = None,
    ) -> list[Any]:
        """Every payload posted, ``concurrency`` at a time, each answer passed through
        ``read(index, answer)`` (which raises Retryable on an answer of the wrong shape).
        The budget is taken for the whole batch before any is sent, so none is spent on a
        batch that cannot finish; after the first failure no request starts (a worker would
        otherwise take the next one before the failure is seen), and that failure is raised."""
        self.reserve(len(payloads))
        if self.bar is None:
            self.bar = tqdm(desc=self.base_url, unit="req", position=1, leave=False)
        failed = threading.Event()

        def one(index: int) -> Any:
            if failed.is_set():
                raise NotStarted
            try:
                result = self.request(path, payloads[index], lambda answer: read(index, answer))
            except BaseException:
                failed.set()
                raise
            with self.lock:  # progress bars are not thread-safe
                self.bar.update(1)
                if done is not None:
                    done()
            return result

        with ThreadPoolExecutor(max_workers=self.settings.concurrency) as pool:
            futures = [pool.submit(one, index) for index in range(len(payloads))]
            wait(futures, return_when=FIRST_EXCEPTION)
            if failed.is_set():
                for future in futures:
                    future.cancel()
        errors = (future.exception() for future in futures if not future.cancelled())
        first = next((e for e in errors if e is not None and not isinstance(e, NotStarted)), None)
        if first is not None:
            raise first
        return [future.result() for future in futures]

    def reserve(self, count: int) -> None:
        cap = self.settings.max_requests
        with self.lock:
            if cap is not None and self.sent + count > cap:
                raise UserError(
                    f"{self.base_url}: max_requests {cap} reached ({self.sent} sent, {count} "
                    "more needed for the next batch); finished samples are kept, raise "
                    "requests.max_requests or run again to continue"
                )
            self.sent += count

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    @property
    def root(self) -> str:
        """The server's root, where vLLM serves ``/tokenize``: the base URL without ``/v1``."""
        return self.base_url.removesuffix("/v1")


def server_message(body: bytes) -> str:
    """The first line of an error answer: OpenAI's ``{"error": {"message": ...}}`` or text."""
    text = body.decode("utf-8", "replace").strip()
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError):
        return first_line(ValueError(text[:300])) if text else "no message"
    error = parsed.get("error", parsed) if isinstance(parsed, dict) else parsed
    message = error.get("message", error) if isinstance(error, dict) else error
    return first_line(ValueError(str(message)[:300]))


def retry_after(headers: Any) -> float | None:
    """Seconds a Retry-After header asks for (a number or an HTTP date)."""
    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None  # not a date either: back off by our own rule
        seconds = when.timestamp() - time.time()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def server_identity(endpoint: Endpoint, model: str) -> dict[str, Any]:
    """What the server says of ``model`` (GET /models): part of the key of its answers, so
    a different model behind the same name is not mistaken for the one that answered."""
    try:
        listing = endpoint.request("/models")
    except Refused as refused:
        if refused.status == 404:  # some servers list nothing; the name is all there is
            return {"id": model, "listed": False}
        raise
    served = listing.get("data") if isinstance(listing, dict) else None
    if not isinstance(served, list):
        raise UserError(f"{endpoint.base_url}/models: not a model list")
    for entry in served:
        if isinstance(entry, dict) and entry.get("id") == model:
            return {key: entry[key] for key in SERVER_FIELDS if key in entry}
    names = ", ".join(str(e.get("id")) for e in served if isinstance(e, dict)) or "none"
    raise UserError(f"{endpoint.base_url} does not serve {model!r}; it serves: {names}")


def split_context(context: str, continuation: str) -> tuple[str, str]:
    """lm-eval's rule: trailing spaces of the context belong to the continuation."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        return context[:-spaces], context[-spaces:] + continuation
    return context, continuation


def continuation_logprob(answer: Any, context_chars: int, prompt_chars: int) -> float:
    """Sum of the log-probs of the echoed prompt tokens that hold continuation text: tokens
    that end past the context and start inside the prompt (the one generated token after
    it is not counted)."""
    try:
        logprobs = answer["choices"][0]["logprobs"]
    except (KeyError, IndexError, TypeError):
        raise Retryable("an answer without choices") from None
    if not isinstance(logprobs, dict) or not logprobs.get("token_logprobs"):
        raise NoPromptLogprobs
    starts, values = logprobs.get("text_offset"), logprobs["token_logprobs"]
    if not isinstance(starts, list) or len(starts) != len(values):
        raise NoPromptLogprobs
    impossible = impossible_logprobs(starts, values)
    if impossible:
        raise UserError(f"the server's echoed log-probs cannot be log-probabilities: {impossible}")
    total, counted = 0.0, 0
    for start, end, value in zip(starts, [*starts[1:], math.inf], values, strict=True):
        if start >= prompt_chars:
            break
        if end > context_chars:
            if not isinstance(value, int | float):
                raise Retryable("a continuation token without a log-prob")
            total += value
            counted += 1
    if not counted:
        raise Retryable("no continuation tokens in the echoed prompt")
    return total


def impossible_logprobs(starts: list[Any], values: list[Any]) -> str | None:
    """What makes an echoed log-prob answer impossible, if anything: a log-probability
    above 0, not a number or not finite (the first token's may be null), or token offsets
    that are not whole numbers or go backwards."""
    if not all(isinstance(start, int) and not isinstance(start, bool) for start in starts):
        return "a text_offset that is not a whole number"
    if any(later < earlier for earlier, later in itertools.pairwise(starts)):
        return "text_offsets that go backwards"
    for value in values:
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"a log-prob that is not a number ({str(value)[:40]!r})"
        if not math.isfinite(value):
            return f"a log-prob of {value}"
        if value > 1e-6:
            return f"a positive log-prob ({value:g})"
    return None


def questions_of(split: Sequence[tuple[str, str]]) -> list[list[int]]:
    """Request indexes grouped by context, in order of first appearance: each question's
    options."""
    groups: dict[str, list[int]] = {}
    for index, (context, _) in enumerate(split):
        groups.setdefault(context, []).append(index)
    return list(groups.values())


def first_logprobs(answer: Any) -> dict[str, Any] | None:
    """The ``logprobs`` object of an answer's first choice; None where it has none."""
    try:
        choice = answer["choices"][0]
    except (KeyError, IndexError, TypeError):
        raise Retryable("an answer without choices") from None
    logprobs = choice.get("logprobs") if isinstance(choice, dict) else None
    return logprobs if isinstance(logprobs, dict) else None


def next_token_logprobs(answer: Any) -> dict[str, float] | None:
    """The top log-probs of the one token generated after the prompt, by token text: the
    model's next-token distribution where the prompt ends; None where the answer carries
    none (a server that returns only the chosen token's, or no log-probs)."""
    logprobs = first_logprobs(answer)
    tops = None if logprobs is None else logprobs.get("top_logprobs")
    if not isinstance(tops, list) or not tops or not isinstance(tops[0], dict):
        return None
    values = list(tops[0].values())
    impossible = impossible_logprobs([], values)
    if impossible:
        raise UserError(f"the server's top log-probs cannot be log-probabilities: {impossible}")
    if any(value is None for value in values):
        return None
    return {str(token): float(value) for token, value in tops[0].items()}


def token_ids(answer: Any) -> list[int] | None:
    """The token ids of a ``/tokenize`` answer (vLLM's ``{"tokens": [...]}``); None where
    the answer is of another shape (another server's ``/tokenize``)."""
    tokens = answer.get("tokens") if isinstance(answer, dict) else None
    if not isinstance(tokens, list) or not all(
        isinstance(token, int) and not isinstance(token, bool) for token in tokens
    ):
        return None
    return tokens


def one_token_after(context: list[int], whole: list[int]) -> int | None:
    """The one token a continuation is, split as lm-eval splits it (the tokens of context
    and continuation after those of the context), where the context's tokens begin the
    whole's; None otherwise."""
    if len(whole) == len(context) + 1 and whole[: len(context)] == context:
        return whole[-1]
    return None


def forced_logprob(answer: Any, continuation: str, token: int) -> float | None:
    """The log-prob of the one token generated after the prompt, where it is the forced
    ``token`` (by its text, or vLLM's ``token_id:N``); None where another token came or
    the answer carries no log-prob."""
    logprobs = first_logprobs(answer)
    if logprobs is None:
        return None
    tokens, values = logprobs.get("tokens"), logprobs.get("token_logprobs")
    if not isinstance(tokens, list) or not isinstance(values, list) or not values:
        return None
    if tokens[:1] not in ([continuation], [f"token_id:{token}"]) or values[0] is None:
        return None
    impossible = impossible_logprobs([], values[:1])
    if impossible:
        raise UserError(f"the server's forced log-probs cannot be log-probabilities: {impossible}")
    return float(values[0])


def probability_sum(logprobs: dict[int, float]) -> float:
    """The probability a question's distinct option tokens hold together: at most 1 where
    the log-probs are the model's."""
    return sum(math.exp(value) for value in logprobs.values())


def listed_logprobs(answer: Any, parts: Sequence[tuple[str, str]]) -> list[float] | None:
    """Each (context, continuation)'s log-prob from one answer to a list of prompts (one
    choice per prompt, by ``index``); None where the server did not answer each prompt
    (it took the list as one prompt or only the first)."""
    try:
        choices = answer["choices"]
        indexes = [choice.get("index", position) for position, choice in enumerate(choices)]
    except (KeyError, TypeError, AttributeError):
        raise Retryable("an answer without choices") from None
    if sorted(indexes) != list(range(len(parts))):
        return None
    ordered = [choice for _, choice in sorted(zip(indexes, choices, strict=True))]
    return [
        continuation_logprob({"choices": [choice]}, len(context), len(context + continuation))
        for choice, (context, continuation) in zip(ordered, parts, strict=True)
    ]


def logprob_refusal(base_url: str, why: str) -> UserError:
    return UserError(
        f"{base_url} does not return prompt log-probs ({why}), which log-likelihood "
        "multiple-choice scoring needs; set `multiple_choice: generate` on this model "
        "to score options parsed from its answers"
    )


@dataclass
class EndpointModel:
    """A served model, prompted and scored as the local backends are."""

    endpoint: Endpoint
    model: str
    server: dict[str, Any]
    system_prompt: str | None = None
    # the forms of a question's one request the server takes; each turned off at its refusal
    next_token_options: bool = True
    forced_options: bool = True
    prompt_lists: bool = True

    @property
    def chunk_size(self) -> int:
        """Enough to keep every request slot busy; small enough that a kill loses little."""
        return max(16, 4 * self.endpoint.settings.concurrency)

    def loglikelihoods(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        """Each question in one request where the server allows (its options read off the
        next token's top log-probs where each is one token), else each one-token option
        forced after the question alone, else the options sent as a list of prompts, the
        rest one request per option; the first refusal of a form turns it off."""
        split = [split_context(context, continuation) for context, continuation in requests]
        questions = questions_of(split)
        scores: dict[int, float] = {}

        def rest() -> list[list[int]]:
            return [question for question in questions if question[0] not in scores]

        try:
            if self.next_token_options:
                scores |= self._next_token_scores(split, questions)
            if self.forced_options and rest():
                scores |= self._forced_scores(split, rest())
            if self.prompt_lists and rest():
                scores |= self._listed_scores(split, rest())
            left = [index for index in range(len(split)) if index not in scores]
            if left:
                scores |= self._each_scores(split, left)
        except NoPromptLogprobs:
            raise logprob_refusal(self.endpoint.base_url, "its answers carry none") from None
        except Refused as refused:
            if "logprob" in refused.detail.lower() or "echo" in refused.detail.lower():
                raise logprob_refusal(self.endpoint.base_url, refused.detail) from None
            raise
        return [scores[index] for index in range(len(split))]

    def _next_token_scores(
        self, split: Sequence[tuple[str, str]], questions: Sequence[list[int]]
    ) -> dict[int, float]:
        """One request per question, its context alone: each option that is one of the top
        next tokens after it gets that token's log-prob (the log-prob the echoed option
        would get); a question with an option among none of them is left to the others,
        and a batch of which no question was answered so turns this form off."""
        payloads = [self._one_token(split[question[0]][0], TOP_LOGPROBS) for question in questions]
        tops = self._unless_refused(
            "top log-probs", "lists of prompts", payloads, next_token_logprobs
        )
        if tops is None or any(top is None for top in tops):
            self.next_token_options = False
            return {}
        scores: dict[int, float] = {}
        for question, top in zip(questions, tops, strict=True):
            if all(split[index][1] in top for index in question):
                scores.update({index: top[split[index][1]] for index in question})
        if questions and not scores:  # options never among the top ones (a weak model)
            self.next_token_options = False
        return scores

    def _forced_scores(
        self, split: Sequence[tuple[str, str]], questions: Sequence[list[int]]
    ) -> dict[int, float]:
        """One request per option, the question alone as prompt and the option's one token
        forced by ``logit_bias``: the log-prob the server returns for it is the echoed
        option's where the server returns log-probs from before the bias (vLLM's default
        ``raw_logprobs``), and the question's prefill is shared among its options by the
        prefix cache (no prompt log-probs asked). A question with an option of other than one
        token, or with another token generated, is left to the others; log-probs after the
        bias (options likelier together than certain) turn this form off, and so does a
        batch of which no question asked was answered so."""
        tokens = self._option_tokens(split, questions)
        if tokens is None:
            self.forced_options = False
            return {}
        asked = [question for question in questions if all(i in tokens for i in question)]
        # each question's first option before any second one: its prefill is cached first
        order = [
            question[position]
            for position in range(max((len(question) for question in asked), default=0))
            for question in asked
            if position < len(question)
        ]
        payloads = [
            self._one_token(split[index][0], 1, logit_bias={str(tokens[index]): FORCING_BIAS})
            for index in order
        ]
        extras = ([split[index][1] for index in order], [tokens[index] for index in order])
        answers = self._unless_refused(
            "forced options", self._after_forced(), payloads, forced_logprob, *extras
        )
        if answers is None:
            self.forced_options = False
            return {}
        forced = dict(zip(order, answers, strict=True))
        scores: dict[int, float] = {}
        for question in asked:
            if any(forced[index] is None for index in question):
                continue
            if probability_sum({tokens[i]: forced[i] for i in question}) > 1 + PROBABILITY_SLACK:
                self._say_off(
                    "returns log-probs after logit_bias (its forced options are together "
                    "likelier than certain)"
                )
                return {}
            scores.update({index: forced[index] for index in question})
        if asked and not scores:  # a server that ignores logit_bias or returns no log-probs
            self.forced_options = False
        return scores

    def _option_tokens(
        self, split: Sequence[tuple[str, str]], questions: Sequence[list[int]]
    ) -> dict[int, int] | None:
        """Each option's one token (where it is one), from the server's ``/tokenize``; each
        text tokenized once. None where the server has no such ``/tokenize``, said once."""
        texts = list(
            dict.fromkeys(
                text
                for question in questions
                for index in question
                for text in (split[index][0], split[index][0] + split[index][1])
            )
        )
        payloads = [{"model": self.model, "prompt": text} for text in texts]
        url = f"{self.endpoint.root}/tokenize"
        try:
            answers = self.endpoint.post_all(url, payloads, lambda _, answer: token_ids(answer))
        except Refused as refused:
            if refused.status not in NO_TOKENIZE:
                raise
            self._say_off(f"gives no token ids at {url} (HTTP {refused.status})")
            return None
        if any(answer is None for answer in answers):
            self._say_off(f"gives no token ids at {url} (not vLLM's answer)")
            return None
        tokenized = dict(zip(texts, answers, strict=True))
        tokens: dict[int, int] = {}
        for question in questions:
            for index in question:
                context, continuation = split[index]
                token = one_token_after(tokenized[context], tokenized[context + continuation])
                if token is not None:
                    tokens[index] = token
        return tokens

    def _after_forced(self) -> str:
        return "lists of prompts" if self.prompt_lists else "one request per option"

    def _say_off(self, why: str) -> None:
        """The forced form turned off, said once."""
        self.forced_options = False
        tqdm.write(
            f"{self.endpoint.base_url} {why}; options are asked in {self._after_forced()}",
            file=sys.stderr,
        )

    def _listed_scores(
        self, split: Sequence[tuple[str, str]], questions: Sequence[list[int]]
    ) -> dict[int, float]:
        """One request per question, its options a list of prompts echoed with log-probs."""
        parts = [[split[index] for index in question] for question in questions]
        payloads = [
            self._one_token(
                [context + continuation for context, continuation in part], 1, echo=True
            )
            for part in parts
        ]
        answers = self._unless_refused(
            "lists of prompts", "one request per option", payloads, listed_logprobs, parts
        )
        if answers is None or any(answer is None for answer in answers):
            self.prompt_lists = False
            return {}
        return {
            index: score
            for question, answer in zip(questions, answers, strict=True)
            for index, score in zip(question, answer, strict=True)
        }

    def _each_scores(
        self, split: Sequence[tuple[str, str]], indexes: list[int]
    ) -> dict[int, float]:
        """One echoed request per option (lm-eval's ``local-completions``)."""
        payloads = [
            self._one_token(split[index][0] + split[index][1], 1, echo=True) for index in indexes
        ]

        def read(position: int, answer: Any) -> float:
            context, continuation = split[indexes[position]]
            return continuation_logprob(answer, len(context), len(context + continuation))

        scores: list[float] = self.endpoint.post_all("/completions", payloads, read)
        return dict(zip(indexes, scores, strict=True))

    def _one_token(self, prompt: str | list[str], logprobs: int, **extra: Any) -> dict[str, Any]:
        """A completion request of one greedy token with its ``logprobs`` top log-probs:
        every multiple-choice form asks one, and reads the prompt's or that token's."""
        return {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": logprobs,
            **extra,
        }

    def _unless_refused(
        self,
        form: str,
        fallback: str,
        payloads: Sequence[dict[str, Any]],
        read: Callable[..., Any],
        *extra: Sequence[Any],
    ) -> list[Any] | None:
        """The completions, each read as ``read(answer, *its extras)``; None where the
        server refuses the requests' form (a bad request), which is then said once."""
        try:
            answers: list[Any] = self.endpoint.post_all(
                "/completions",
                payloads,
                lambda index, answer: read(answer, *(items[index] for items in extra)),
            )
        except Refused as refused:
            if refused.status not in NOT_TAKEN:
                raise
            tqdm.write(
                f"{self.endpoint.base_url} does not take {form} ({refused.detail}); "
                f"options are asked in {fallback}",
                file=sys.stderr,
            )
            return None
        return answers

    def generate(
        self, user_messages: Sequence[Prompt], max_new_tokens: int, progress: Progress | None = None
    ) -> list[str]:
        return [c.text for c in self.complete(user_messages, max_new_tokens, progress)]

    def complete(
        self,
        user_messages: Sequence[Prompt],
        max_new_tokens: int,
        progress: Progress | None = None,
        sampling: Sampling | None = None,
    ) -> list[Completion]:
        payloads = [
            {
                "model": self.model,
                "messages": self.messages(message),
                "max_tokens": max_new_tokens,
                "temperature": 0.0,
            }
            for message in user_messages
        ]
        if sampling is not None:  # the server's seed, where it honours one (best effort)
            for payload, seed in zip(payloads, sampling.seeds, strict=True):
                payload.update(temperature=sampling.temperature, top_p=sampling.top_p, seed=seed)
        done = None if progress is None else (lambda: progress(1))
        answers: list[Completion] = self.endpoint.post_all(
            "/chat/completions", payloads, lambda _, answer: chat_answer(answer), done
        )
        return answers

    def messages(self, prompt: Prompt) -> list[dict[str, str]]:
        return chat_messages(prompt, self.system_prompt)

    def close(self) -> None:
        self.endpoint.close()

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "openai",
            "source": f"openai:{self.model}",
            "base_url": self.endpoint.base_url,
            "server": self.server,
            "chat_template": CHAT_TEMPLATE,
            "loglikelihoods": (
                "completions: top logprobs of the next token, else each option forced by "
                "logit_bias (its raw logprob), else echo and logprobs"
            ),
            "requests": self.endpoint.settings.model_dump(mode="json"),
            "system_prompt": self.system_prompt,
            "device": "server",
        }


def chat_answer(answer: Any) -> Completion:
    """The assistant's text, whether the server stopped it at ``max_tokens`` (finish_reason
    ``length``), and the reasoning a reasoning model's server returns in a field of its own
    (``reasoning_content``: vLLM's reasoning parsers, DeepSeek's API; ``reasoning``: others)
    with its token count where the usage says."""
    try:
        choice = answer["choices"][0]
        message = choice["message"]
        content = message.get("content")
        reasoning = message.get("reasoning_content") or message.get("reasoning")
    except (KeyError, IndexError, TypeError, AttributeError):
        raise Retryable("an answer without choices") from None
    if content is not None and not isinstance(content, str):
        raise Retryable("an answer whose content is not text")
    usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else {}
    details = usage.get("completion_tokens_details")
    details = details if isinstance(details, dict) else {}
    tokens, reasoning_tokens = usage.get("completion_tokens"), details.get("reasoning_tokens")
    return Completion(
        (content or "").strip(),
        hit_limit=choice.get("finish_reason") == "length",
        tokens=tokens if isinstance(tokens, int) else None,
        reasoning=reasoning.strip() if isinstance(reasoning, str) and reasoning.strip() else None,
        reasoning_tokens=reasoning_tokens if isinstance(reasoning_tokens, int) else None,
    )


def load(request: LoadRequest) -> EndpointModel:
    """The endpoint backend's loader (declared in models/backends/endpoint.py):
    ``openai:NAME``."""
    own = request.settings.of_backend(EndpointSettings)
    if request.adapter or own.base_url is None:
        raise UserError(f"{request.spec}: an endpoint model takes a base_url and no adapter")
    return load_endpoint_model(
        request.source,
        base_url=own.base_url,
        api_key_env=own.api_key_env,
        settings=own.requests or EndpointRequests(),
        system_prompt=request.settings.system_prompt,
    )


def load_endpoint_model(
    model: str,
    *,
    base_url: str,
    api_key_env: str | None,
    settings: EndpointRequests,
    system_prompt: str | None,
) -> EndpointModel:
    endpoint = Endpoint(check_base_url(base_url), api_key_env, settings)
    return EndpointModel(
        endpoint=endpoint,
        model=model,
        server=server_identity(endpoint, model),
        system_prompt=system_prompt,
    )
