"""Typed records shared by every task: what a sample is and what a task declares about itself."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from medharness.core.errors import UserError

TaskKind = Literal["generate", "multiple_choice"]
Conversation = tuple[tuple[str, str], ...]  # (role, content) chat turns, the last the user's


def conversation_text(turns: Conversation) -> str:
    """A conversation as plain text: ``role: content`` turns a blank line apart (how
    simple-evals shows one to HealthBench's grader)."""
    return "\n\n".join(f"{role}: {content}" for role, content in turns)


@dataclass(frozen=True)
class Sample:
    """One document of a benchmark, ready to be put to a model.

    For generation tasks ``prompt`` is the user message (wrapped in the model's chat template
    at evaluation time; with ``conversation``, the model answers that chat instead and
    ``prompt`` is its text for reports and graders) and ``target`` the reference answer.
    For multiple-choice tasks ``prompt`` is the complete scoring context (lm-eval style, no
    chat template), ``choices`` the continuations scored by log-likelihood, ``gold`` the
    index of the right one.
    """

    doc_id: str
    prompt: str
    target: str
    choices: tuple[str, ...] = ()
    gold: int | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    conversation: Conversation = ()  # where the model answers a whole chat, not ``prompt``


@dataclass(frozen=True)
class LoadedData:
    """The samples of one split, the sha256 of every data file read to make them, and how
    many rows were left out for each reason (recorded in the manifest)."""

    samples: list[Sample]
    file_hashes: dict[str, str]
    skipped: dict[str, int] = field(default_factory=dict)


def require_text(value: Any, where: str, column: str) -> str:
    """A required text field: a non-empty string, else one error naming file, row, column."""
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{where}: {column}: must be non-empty text, not {value!r}")
    return value


@dataclass(frozen=True)
class AnswerRead:
    """What a task's own scoring read from one generated answer: the answer in the form it
    was scored in (None where none could be read) and the answer's per-sample metrics."""

    extracted: str | None
    metrics: dict[str, float]


@dataclass(frozen=True)
class AnswerScoring:
    """A generation task scored by its own rules on each answer and its sample (the
    sample's metadata holds what the rules need), in place of scoring against the target."""

    score: Callable[[Sample, str], AnswerRead]
    metric_names: tuple[str, ...]  # the metrics ``score`` gives
    settings: Callable[[], dict[str, Any]]  # how, for the task result's settings


@dataclass(frozen=True)
class Task:
    """A benchmark: where its data lives, how to load it, how it is scored."""

    name: str
    version: str
    kind: TaskKind
    summary: str
    data_subdir: str
    obtain_hint: str
    load: Callable[[Path], LoadedData]
    metric_names: tuple[str, ...]
    target_delimiter: str = " "
    prompt_template: str = ""
    breakdown_keys: tuple[str, ...] = ()  # sample metadata keys reports group scores by
    source: str = ""  # where its rows come from when not the data root: hub:ORG/NAME@REV
    answer_scoring: AnswerScoring | None = None
    # answers reason before they answer: generated up to generation.cot_max_new_tokens
    reasoned: bool = False
    rubric_graded: bool = False  # graders judge each sample's own rubric items (HealthBench)
