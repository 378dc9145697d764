"""Shared machinery for letter-answer multiple-choice tasks (MedQA variants, MedMCQA)."""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from typing import Any

from medharness.tasks.base import Sample

LETTERS = string.ascii_uppercase


def options_block(options: Sequence[str]) -> str:
    """``A. first\\nB. second\\n`` as lm-eval's medical tasks write it."""
    return "".join(f"{LETTERS[i]}. {text}\n" for i, text in enumerate(options))


def medqa_prompt(question: str, options: Sequence[str]) -> str:
    """lm-eval ``medqa_4options`` prompt: ``Question: ...\\nA. ...\\nAnswer:``."""
    return f"Question: {question}\n{options_block(options)}Answer:"


def medmcqa_prompt(question: str, options: Sequence[str]) -> str:
    """lm-eval ``medmcqa`` prompt, which adds a ``Choices:`` line."""
    return f"Question: {question}\nChoices:\n{options_block(options)}Answer:"


def letter_sample(
    doc_id: str,
    prompt: str,
    n_options: int,
    gold: int,
    metadata: Mapping[str, Any],
) -> Sample:
    """A sample whose choices are the option letters, as lm-eval scores MedQA and MedMCQA."""
    letters = tuple(LETTERS[:n_options])
    return Sample(
        doc_id=doc_id,
        prompt=prompt,
        target=letters[gold],
        choices=letters,
        gold=gold,
        metadata=dict(metadata),
    )
