"""What tasks need from a model: the protocol every backend implements."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from medharness.tasks.base import Conversation

# Told how many samples' worth of work just finished (fractions while a batch decodes), so a
# progress bar moves from the first seconds instead of once per batch.
Progress = Callable[[float], None]
# a user message, or a whole conversation whose next turn is the model's (HealthBench)
Prompt = str | Conversation


@dataclass(frozen=True)
class Completion:
    """One greedy answer and how it ended: ``hit_limit`` where decoding stopped at the token
    budget rather than at the end of the answer (an answer cut off mid-reasoning)."""

    text: str
    hit_limit: bool
    tokens: int | None = None  # tokens generated, where the backend counts them
    # a trace a server returns in a field of its own (vLLM's reasoning parser, DeepSeek's
    # API), and its length in tokens where the server says
    reasoning: str | None = None
    reasoning_tokens: int | None = None


@dataclass(frozen=True)
class Sampling:
    """Sampled decoding of one ``complete`` call: temperature, nucleus, and one seed per
    message, so that each question's each repeat has an answer of its own and a rerun (or a
    resumed run) draws the same one."""

    temperature: float
    top_p: float
    seeds: tuple[int, ...]


class LanguageModel(Protocol):
    """What tasks need from a model. Both calls are batched by the model itself."""

    @property
    def chunk_size(self) -> int:
        """Samples per call: enough to fill the model's batches, few enough that progress
        shows and an interrupted run loses little."""
        ...

    def loglikelihoods(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        """Sum of log-probabilities of each continuation given its context (lm-eval rules)."""
        ...

    def generate(
        self, user_messages: Sequence[Prompt], max_new_tokens: int, progress: Progress | None = None
    ) -> list[str]:
        """Greedy answers to user messages (or whole conversations), each wrapped in the
        model's own chat template; ``progress`` hears of the work done as it is done."""
        ...

    def complete(
        self,
        user_messages: Sequence[Prompt],
        max_new_tokens: int,
        progress: Progress | None = None,
        sampling: Sampling | None = None,
    ) -> list[Completion]:
        """``generate``'s answers with how each ended (``generate`` keeps their text);
        sampled as ``sampling`` says where it is given, else greedy."""
        ...

    def describe(self) -> dict[str, Any]:
        """What the manifest records about this model."""
        ...


@dataclass(frozen=True)
class SharedPrefix:
    """Log-likelihood requests whose contexts all open with ``prefix``: each branch is a
    suffix (the context is ``prefix + suffix``) and the continuations scored after it. A
    judge's criteria share the case they grade and differ only at the end."""

    prefix: str
    branches: tuple[tuple[str, tuple[str, ...]], ...]

    def requests(self) -> list[tuple[str, str]]:
        """The plain ``loglikelihoods`` requests these stand for, branch by branch."""
        return [
            (self.prefix + suffix, continuation)
            for suffix, continuations in self.branches
            for continuation in continuations
        ]


def shared_prefix_loglikelihoods(
    model: LanguageModel, groups: Sequence[SharedPrefix]
) -> list[float]:
    """``loglikelihoods`` of every group's requests, in order: a backend that can compute a
    shared prefix once and reuse it (transformers, by its KV cache) does; any other scores
    the plain requests, which is what the results must equal either way."""
    shared = getattr(model, "shared_prefix_loglikelihoods", None)
    if shared is not None:
        return list(shared(groups))
    return model.loglikelihoods([request for group in groups for request in group.requests()])


def answer_stream(model: LanguageModel, user_message: str, max_new_tokens: int) -> Iterator[str]:
    """One greedy answer as it grows: token by token where the backend streams (transformers),
    else whole once it is there."""
    stream = getattr(model, "stream", None)
    if stream is not None:
        yield from stream(user_message, max_new_tokens)
    else:
        yield model.generate([user_message], max_new_tokens)[0]


def count_tokens(model: LanguageModel, text: str) -> int | None:
    """``text``'s length in the model's tokens, where the backend has a tokenizer here."""
    count = getattr(model, "count_tokens", None)
    return None if count is None else int(count(text))
