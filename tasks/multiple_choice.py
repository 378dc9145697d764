"""Shared machinery for multiple-choice tasks: letter-answer prompts (MedQA variants,
MedMCQA), and reading the chosen option out of a generated answer."""

from __future__ import annotations

import re
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
# read from its answer, for chat and reasoning models and for servers without log-probs.
REASONING = re.compile(r"<think>.*?(</think>|$)", re.S)
CHOICE_PARSE_RULES = (
    "reasoning in <think> tags is dropped; then the last 'answer is X' / 'Answer: X', else "
    "an option the reply opens with, else the one option the reply names (letters as 'X.', "
    "'X)' or '(X)'); an answer naming no option, or several, is invalid"
)


def listed(choices: Sequence[str]) -> str:
    return ", ".join(choices[:-1]) + f" or {choices[-1]}" if len(choices) > 1 else choices[0]


def choice_question(prompt: str, choices: Sequence[str]) -> str:
    """The user message that asks for one option: the task's prompt without its trailing
    ``Answer:`` cue, and an instruction naming the options."""
    question = prompt.rstrip().removesuffix("Answer:").rstrip()
    return f"{question}\n\nAnswer with {listed(choices)} only."


def parse_choice(text: str, choices: Sequence[str]) -> int | None:
    """The index of the option an answer gives (rules: CHOICE_PARSE_RULES); None if none."""
    reply = REASONING.sub("", text).strip()
    letters = all(len(choice) == 1 for choice in choices)
    flags = 0 if letters else re.IGNORECASE  # a lone "a" is an article, "A" an option
    options = "|".join(re.escape(c) for c in sorted(choices, key=len, reverse=True))
    stated = re.findall(
        rf"(?i:answer)(?:\s+is)?\s*[:\-]?\s*[(\[*_\s]*({options})(?![\w-])", reply, flags
    )
    if stated:
        return _index(stated[-1], choices)
    shape = rf"(?<![\w-])\(?({options})[.):](?![\w-])" if letters else rf"\b({options})\b"
    named = {match.lower() for match in re.findall(shape, reply, flags)}
    opening = re.match(rf"[\W_]*({options})(?![\w-])", reply, flags)
    if opening and named <= {opening.group(1).lower()}:
        return _index(opening.group(1), choices)
    return _index(named.pop(), choices) if len(named) == 1 else None


def _index(option: str, choices: Sequence[str]) -> int:
    return next(i for i, choice in enumerate(choices) if choice.lower() == option.lower())
