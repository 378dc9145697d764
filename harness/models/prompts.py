"""Prompt building shared by every local backend: one chat template, one tokenisation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from medharness.core.errors import UserError


def chat_prompt(tokenizer: Any, user_message: str, system_prompt: str | None, source: str) -> str:
    """A user message in the model's own chat template, ready for the assistant's turn."""
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(
            f"the tokenizer of {source} has no chat template; generation tasks "
            "format prompts with it (use an instruct model or add a template)"
        )
    messages = [{"role": "user", "content": user_message}]
    if system_prompt is not None:
        messages.insert(0, {"role": "system", "content": system_prompt})
    text: str = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return text


def encode_pairs(
    tokenizer: Any, requests: Sequence[tuple[str, str]]
) -> list[tuple[list[int], list[int]]]:
    """lm-eval's ``_encode_pair`` for each request: trailing context spaces move to the
    continuation, and the continuation's tokens are those of the whole string after the
    context's. Encoded in two batched tokenizer calls; shared contexts once."""
    split = []
    for context, continuation in requests:
        spaces = len(context) - len(context.rstrip())
        if spaces:
            continuation = context[-spaces:] + continuation
            context = context[:-spaces]
        split.append((context, continuation))
    contexts = list(dict.fromkeys(context for context, _ in split))
    context_ids = dict(zip(contexts, tokenizer(contexts)["input_ids"], strict=True))
    wholes = tokenizer([context + continuation for context, continuation in split])
    return [
        (context_ids[context], whole[len(context_ids[context]) :])
        for (context, _), whole in zip(split, wholes["input_ids"], strict=True)
    ]
