"""Requests that share a prefix (a judge's criteria for one answer) scored with the prefix run
once and its KV cache reused, against the plain per-request log-likelihoods they stand for.

The transformers checks run in float64: there the two paths' arithmetic agrees to ~1e-12, so a
wrong split, a misplaced position or one branch's tokens left in the next one's cache shows
far above the 1e-6 asked. (In float32 the plain path itself moves by a few 1e-6 when only its
batches are composed differently; BENCHMARKS.md has the float32 figures.)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from medharness.judge import criteria_requests
from medharness.models.base import SharedPrefix, shared_prefix_loglikelihoods
from medharness.models.loading import load_model
from medharness.tasks.judging.rubric import load_rubric
from medharness.tasks.judging.verdicts import case_prompt, criterion_prompt, probability_weighted

RUBRIC = load_rubric("medical-qa", Path.cwd())
# (question, reference, answer), as MedQuAD's are and a small model answers them
CASES = [
    (
        "What is (are) Glaucoma ?",
        "Glaucoma is a group of diseases that can damage the eye's optic nerve and result in "
        "vision loss and blindness. However, with early treatment, you can often protect your "
        "eyes against serious vision loss.",
        "Glaucoma is an eye disease that damages the optic nerve. See an eye doctor early.",
    ),
    (
        "What are the symptoms of High Blood Pressure ?",
        "High blood pressure usually has no symptoms, so many people do not know they have it. "
        "Only a doctor or nurse can measure it.",
        "Headaches, always. If you have no headache your blood pressure is fine.",
    ),
    (
        "How to prevent Osteoporosis ?",
        "Getting enough calcium and vitamin D and doing weight-bearing exercise help prevent "
        "osteoporosis.",
        "Eat calcium-rich foods, get vitamin D, and exercise; ask your doctor about a bone "
        "density test.",
    ),
]


def float64(model: Any) -> Any:
    import torch

    model.model.to(torch.float64)
    return model


@contextmanager
def tokens_run(model: Any) -> Iterator[list[int]]:
    """Counts the input tokens of every forward pass of the model while open."""
    counted: list[int] = []

    def count(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        counted.append(int(kwargs["input_ids"].numel()))

    hook = model.model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        yield counted
    finally:
        hook.remove()


def criterion_scores(loglikelihoods: list[float]) -> list[float | None]:
    """Each criterion's probability-weighted score, five log-likelihoods per criterion."""
    return [
        probability_weighted(loglikelihoods[i : i + 5], range(1, 6))
        for i in range(0, len(loglikelihoods), 5)
    ]


@pytest.fixture(scope="module")
def builtin_float64() -> Any:
    return float64(load_model("smollm2-135m-instruct", backend="hf", dtype="float32"))


@pytest.mark.slow
@pytest.mark.parametrize("batch_size", [8, 3])
def test_a_judge_scored_on_the_shared_case_scores_as_each_plain_context_does(
    builtin_float64: Any, batch_size: int
) -> None:
    model = builtin_float64
    model.batch_size = batch_size  # 3: a group's four criteria run in two batches on one cache
    plain_requests = [
        (criterion_prompt(RUBRIC, criterion, *case), f"{value}")
        for case in CASES
        for criterion in RUBRIC.criteria
        for value in range(criterion.low, criterion.high + 1)
    ]
    groups = [criteria_requests(RUBRIC, *case) for case in CASES]
    assert [r for g in groups for r in g.requests()] == plain_requests
    with tokens_run(model) as plain_tokens:
        plain = model.loglikelihoods(plain_requests)
    with tokens_run(model) as shared_tokens:
        shared = shared_prefix_loglikelihoods(model, groups)
    assert sum(shared_tokens) < sum(plain_tokens) / 2  # the case ran once, not four times
    assert shared == pytest.approx(plain, abs=1e-6)
    assert criterion_scores(shared) == pytest.approx(criterion_scores(plain), abs=1e-6)


@pytest.mark.slow
def test_a_split_inside_a_merged_token_scores_as_the_plain_contexts(builtin_float64: Any) -> None:
    """The prefix text ends inside a word the tokenizer merges across the boundary: the
    shared tokens stop before it, and each branch runs the merged token itself."""
    model = builtin_float64
    model.batch_size = 8
    prefix = case_prompt(RUBRIC, *CASES[1]) + "The answer's word for it: hypert"
    group = SharedPrefix(
        prefix, (("ension. Score:", ("1", "5", " 3")), ("rophy. Score:", ("2", "4")))
    )
    alone = model.tokenizer(prefix)["input_ids"]
    joined = [model.tokenizer(context)["input_ids"] for context, _ in group.requests()]
    assert any(tokens[: len(alone)] != alone for tokens in joined)  # " hypertension" is one
    with tokens_run(model) as plain_tokens:
        plain = model.loglikelihoods(group.requests())
    with tokens_run(model) as shared_tokens:
        shared = shared_prefix_loglikelihoods(model, [group])
    assert sum(shared_tokens) < sum(plain_tokens) / 2  # the prefix ran once
    assert shared == pytest.approx(plain, abs=1e-6)


def test_requests_with_many_token_continuations_and_trailing_spaces(tiny_llama: Path) -> None:
    """lm-eval's rules survive the split: a context's trailing space moves to its
    continuations, and continuations of several tokens are scored token by token."""
    model = float64(load_model(str(tiny_llama), batch_size=2))
    groups = [
        SharedPrefix(
            "Question: is the optic nerve damaged in glaucoma?\nAnswer",
            ((": ", ("yes", "no", "it may be")), (" (one word): ", ("yes", "no")), ("?", ("!",))),
        ),
        SharedPrefix("Osteoporosis is", ((" prevented by", (" calcium", " rest")),)),
    ]
    requests = [r for g in groups for r in g.requests()]
    with tokens_run(model) as plain_tokens:
        plain = model.loglikelihoods(requests)
    with tokens_run(model) as shared_tokens:
        shared = shared_prefix_loglikelihoods(model, groups)
    assert sum(shared_tokens) < sum(plain_tokens)
    assert shared == pytest.approx(plain, abs=1e-9)


def test_groups_sharing_no_token_are_scored_the_plain_way(tiny_llama: Path) -> None:
    model = load_model(str(tiny_llama), batch_size=4)
    groups = [
        SharedPrefix("", (("Glaucoma is", (" a disease", " rare")), ("Osteoporosis", (" is",)))),
        SharedPrefix("One branch only:", ((" here", (" a", " b")),)),
    ]
    requests = [r for g in groups for r in g.requests()]
    assert shared_prefix_loglikelihoods(model, groups) == model.loglikelihoods(requests)


def test_a_backend_without_a_shared_path_scores_the_plain_requests(tmp_path: Path) -> None:
    trace = tmp_path / "calls.log"
    script = tmp_path / "fake.json"
    script.write_text(json.dumps({"choose": [{"match": "vision", "answer": "4"}],
                                  "trace_file": str(trace)}))  # fmt: skip
    model = load_model(f"fake:{script}")
    assert not hasattr(model, "shared_prefix_loglikelihoods")
    groups = [criteria_requests(RUBRIC, *case) for case in CASES]
    requests = [r for g in groups for r in g.requests()]
    shared = shared_prefix_loglikelihoods(model, groups)
    asked = [json.loads(line.split("\t", 1)[1]) for line in trace.read_text().splitlines()]
    assert asked == sorted({context for context, _ in requests})  # one call, whole contexts
    assert shared == model.loglikelihoods(requests)
