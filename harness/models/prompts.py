"""Prompt building shared by every local backend: one chat template, one tokenisation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from medharness.core.errors import UserError
from medharness.models.base import Prompt
from medharness.tasks.base import conversation_text


def chat_messages(prompt: Prompt, system_prompt: str | None) -> list[dict[str, str]]:
    """The chat a prompt stands for: a user message, or the conversation's turns; the
    configured system prompt first, unless the conversation brings its own."""
    turns = [("user", prompt)] if isinstance(prompt, str) else list(prompt)
    messages = [{"role": role, "content": content} for role, content in turns]
    if system_prompt is not None and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def prompt_text(prompt: Prompt) -> str:
    """A prompt as plain text (scripted fake models match on it): a conversation's turns
    as ``role: content``."""
    return prompt if isinstance(prompt, str) else conversation_text(prompt)


def chat_prompt(tokenizer: Any, prompt: Prompt, system_prompt: str | None, source: str) -> str:
    """A prompt in the model's own chat template, ready for the assistant's turn."""
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(
            f"the tokenizer of {source} has no chat template; generation tasks "
            "format prompts with it (use an instruct model or add a template)"
        )
    messages = chat_messages(prompt, system_prompt)
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
