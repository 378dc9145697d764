"""Shared machinery for multiple-choice tasks: letter-answer prompts (MedQA variants,
MedMCQA), and reading the chosen option out of a generated answer."""

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


# Generate-then-parse scoring: the model answers the question in words and the option is
# read from its answer (tasks/answers.py), for chat and reasoning models and for servers
# without log-probs: asked for the option alone, or (chain of thought) to reason first.


def listed(choices: Sequence[str], conjunction: str = " or ") -> str:
    if len(choices) == 1:
        return choices[0]
    return ", ".join(choices[:-1]) + conjunction + choices[-1]


def question_body(prompt: str) -> str:
    """The task's prompt without its trailing ``Answer:`` cue."""
    return prompt.rstrip().removesuffix("Answer:").rstrip()


def choice_question(prompt: str, choices: Sequence[str]) -> str:
    """The user message that asks for one option, naming the options."""
    return f"{question_body(prompt)}\n\nAnswer with {listed(choices)} only."


def cot_question(prompt: str, choices: Sequence[str]) -> str:
    """The user message that asks for reasoning, then a final line naming one option: the
    instruction of lm-eval's ``medqa_4options_cot`` and ``medmcqa_cot`` tasks, word for word
    on their questions ("... (where X is A, B, C, or D).")."""
    options = listed(choices, ", or " if len(choices) > 2 else " or ")
    return (
        f"{question_body(prompt)}\nFirst, think step-by-step. End your response with exactly "
        f"this format:\nFinal Answer: X\n(where X is {options})."
    )
