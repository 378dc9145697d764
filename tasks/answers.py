"""Reading an answer out of generated text, in one place for every task that parses one:
a reasoning trace is cut out first (``<think>...</think>`` and the like), a trace left open
or an answer cut off at the token budget before its final line is *truncated* (never parsed),
then the option is read from the final-answer line, else by the looser rules of
generate-then-parse scoring.

lm-eval's generative medical tasks (``medqa_4options_cot``, ``medmcqa_cot``) read the first
match of ``Final Answer:\\s*(?:\\*\\*)?\\s*([A-D])`` and nothing else; the README lists where
these rules differ from that and why.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

# The tags reasoning models wrap their trace in (DeepSeek-R1 and its distills, Qwen3, QwQ,
# Phi-4-reasoning: <think>; Claude-style and some fine-tunes: <thinking>, <reasoning>).
DEFAULT_REASONING_TAGS: tuple[tuple[str, str], ...] = (
    ("<think>", "</think>"),
    ("<thinking>", "</thinking>"),
    ("<reasoning>", "</reasoning>"),
)

Rule = Literal["final_answer", "answer_is", "opening", "single_option", "none", "truncated"]

EXTRACTION_RULES: dict[str, str] = {
    "final_answer": "the last 'Final Answer: X' line (X as a bare, bold or bracketed option)",
    "answer_is": "no final-answer line: the last 'answer is X' / 'Answer: X'",
    "opening": "else the option the reply opens with, when it names no other",
    "single_option": "else the one option the reply names (letters as 'X.', 'X)' or '(X)')",
    "none": "an answer naming no option, or several: invalid (counted wrong)",
    "truncated": "a reasoning trace left open, or (chain-of-thought) the token budget spent "
    "before a final-answer line: truncated (counted wrong, never parsed)",
}
EXTRACTION_SUMMARY = (
    "a reasoning trace (<think>...</think>, or the entry's reasoning tags) is cut out first; "
    + "; ".join(EXTRACTION_RULES.values())
)


@dataclass(frozen=True)
class Reasoned:
    """Generated text split into its reasoning trace and the reply outside it."""

    reply: str
    reasoning: str | None  # the trace's text, None where there was none
    unclosed: bool  # the text ended inside a trace


@dataclass(frozen=True)
class Extraction:
    """The option an answer gives (None where it gives none) and which rule found it."""

    choice: int | None
    rule: Rule
    reasoning: str | None

    @property
    def truncated(self) -> bool:
        return self.rule == "truncated"

    @property
    def invalid(self) -> bool:
        return self.rule == "none"


def split_reasoning(
    text: str, tags: Sequence[tuple[str, str]] = DEFAULT_REASONING_TAGS
) -> Reasoned:
    """Cut every reasoning trace out of ``text``. A closing tag with no opening one before it
    closes a trace the chat template opened (DeepSeek-R1's and Qwen3's templates end the
    prompt with ``<think>``): all before it is reasoning."""
    reply, traces = text, []
    for start, end in tags:
        opened_by_template = end in reply and (
            start not in reply or reply.index(end) < reply.index(start)
        )
        if opened_by_template:
            trace, _, reply = reply.partition(end)
            traces.append(trace)
        while start in reply:
            before, _, rest = reply.partition(start)
            trace, closed, after = rest.partition(end)
            traces.append(trace)
            if not closed:
                return Reasoned(before.strip(), _joined(traces), unclosed=True)
            reply = before + after
    return Reasoned(reply.strip(), _joined(traces), unclosed=False)


def _joined(traces: list[str]) -> str | None:
    return "\n\n".join(trace.strip() for trace in traces) if traces else None


def extract_choice(
    text: str,
    choices: Sequence[str],
    *,
    hit_limit: bool = False,
    final_line_required: bool = False,
    tags: Sequence[tuple[str, str]] = DEFAULT_REASONING_TAGS,
    reasoning: str | None = None,
) -> Extraction:
    """The option a generated answer gives (rules: EXTRACTION_RULES, in order).

    ``hit_limit``: generation stopped at the token budget. With ``final_line_required``
    (chain-of-thought: the model was asked to end on a final-answer line) an answer cut off
    before that line is truncated, never read by the looser rules; otherwise it is truncated
    only where those rules find nothing either. ``reasoning``: a trace the server returned
    in a field of its own, kept beside any found in the text."""
    split = split_reasoning(text, tags)
    trace = "\n\n".join(part for part in (reasoning, split.reasoning) if part) or None
    if split.unclosed:
        return Extraction(None, "truncated", trace)
    final = _final_answer(split.reply, choices)
    if final is not None:
        return Extraction(final, "final_answer", trace)
    if hit_limit and final_line_required:
        return Extraction(None, "truncated", trace)
    choice, rule = _loose_choice(split.reply, choices)
    if choice is None and hit_limit:
        return Extraction(None, "truncated", trace)
    return Extraction(choice, rule, trace)


def _options(choices: Sequence[str]) -> tuple[str, int]:
    """The alternation matching any option (longest first), and the flags to match it with:
    letters are matched case-sensitively (a lone "a" is an article, "A" an option)."""
    letters = all(len(choice) == 1 for choice in choices)
    options = "|".join(re.escape(c) for c in sorted(choices, key=len, reverse=True))
    return options, 0 if letters else re.IGNORECASE


# "Final Answer: C", "**Final Answer:** C", "Final answer is (C)", "Final Answer: $\\boxed{C}$"
FINAL_ANSWER = (
    r"(?i:final\s+answer)[\s*_]*(?:(?i:is)\b)?[\s*_]*[:\-]?[\s*_(\[$]*(?:\\boxed\{{)?[\s*_(\[]*"
    r"({options})(?![\w-])"
)


def _final_answer(reply: str, choices: Sequence[str]) -> int | None:
    options, flags = _options(choices)
    stated = re.findall(FINAL_ANSWER.format(options=options), reply, flags)
    return _index(stated[-1], choices) if stated else None


def _loose_choice(reply: str, choices: Sequence[str]) -> tuple[int | None, Rule]:
    """generate-then-parse's rules: the last 'answer is X', else the option the reply
    opens with, else the one option it names."""
    options, flags = _options(choices)
    letters = flags == 0
    stated = re.findall(
        rf"(?i:answer)(?:\s+is)?\s*[:\-]?\s*[(\[*_\s]*({options})(?![\w-])", reply, flags
    )
    if stated:
        return _index(stated[-1], choices), "answer_is"
    shape = rf"(?<![\w-])\(?({options})[.):](?![\w-])" if letters else rf"\b({options})\b"
    named = {match.lower() for match in re.findall(shape, reply, flags)}
    opening = re.match(rf"[\W_]*({options})(?![\w-])", reply, flags)
    if opening and named <= {opening.group(1).lower()}:
        return _index(opening.group(1), choices), "opening"
    if len(named) == 1:
        return _index(named.pop(), choices), "single_option"
    return None, "none"


def _index(option: str, choices: Sequence[str]) -> int:
    return next(i for i, choice in enumerate(choices) if choice.lower() == option.lower())
