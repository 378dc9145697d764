"""Grade answers of rubric-graded tasks (HealthBench) item by item with the run's judges.

Every grader judges every rubric item of every answer met or not met, with simple-evals'
grader prompt (tasks/judging/items.py). Verdicts are cached per (grader identity, prompt
version, conversation, item, answer) in the judges' append-only cache, so a re-run or a
``rescore`` with another grader grades only what is new to it. An output with no readable
``criteria_met`` is graded once more; still unreadable, the item is left out of the score
and counted, never taken as met or not met.
"""

from __future__ import annotations

import gc
import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from medharness.config import JudgeEntry
from medharness.core.cache import VerdictCache
from medharness.core.records import GenerationRow, GradedItem, InputRow, ItemVerdict, SampleRow
from medharness.evaluate import answers_identity, close_engine, load_entry
from medharness.models.base import LanguageModel
from medharness.tasks.base import conversation_text
from medharness.tasks.healthbench import MetaExample
from medharness.tasks.judging.items import (
    ITEM_PROMPT_VERSION,
    example_score,
    grader_prompt,
    parse_item_verdict,
    reported_tag,
    tag_scores,
)
from medharness.tasks.metrics import RUBRIC_METRIC, TAG_PREFIX, is_breakdown
from medharness.tasks.metrics.agreement import macro_f1, macro_f1_interval, pairwise_counts


@dataclass(frozen=True)
class ItemRequest:
    """One rubric item of one answer, as a grader is asked about it."""

    conversation: str
    answer: str
    criterion: str
    points: float

    @property
    def key(self) -> str:
        identity = [self.conversation, self.criterion, self.points, self.answer]
        return hashlib.sha256(json.dumps(identity).encode()).hexdigest()

    def prompt(self) -> str:
        return grader_prompt(self.conversation, self.answer, self.criterion, self.points)


def grader_cache_key(grader: JudgeEntry, max_new_tokens: int) -> str:
    """What a grader's item verdicts depend on; its name is only a label."""
    identity = {
        **answers_identity(grader, labels=("name",)),
        "item_prompt_version": ITEM_PROMPT_VERSION,
        "max_new_tokens": max_new_tokens,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def requests_of(asked: InputRow, answer: str) -> list[ItemRequest]:
    return [
        ItemRequest(asked.prompt, answer, item["criterion"], item["points"])
        for item in asked.metadata["rubrics"]
    ]


def grade_rows(
    graders: Sequence[JudgeEntry],
    max_new_tokens: int,
    logs: Sequence[tuple[list[SampleRow], dict[str, InputRow]]],
) -> list[list[SampleRow]]:
    """Every log's rows with their graded items and scores; without graders, rows lose any
    grades an earlier run left."""
    if not graders:
        return [[ungraded(row) for row in rows] for rows, _ in logs]
    wanted = {
        request.key: request
        for rows, inputs in logs
        for row in rows
        if isinstance(row, GenerationRow)
        for request in requests_of(inputs[row.doc_id], row.prediction)
    }
    verdicts = {g.name: grade_items(g, max_new_tokens, wanted) for g in graders}
    return [
        [
            graded_row(row, inputs[row.doc_id], verdicts) if isinstance(row, GenerationRow) else row
            for row in rows
        ]
        for rows, inputs in logs
    ]


def ungraded(row: SampleRow) -> SampleRow:
    if not isinstance(row, GenerationRow) or row.graded_items is None:
        return row
    return row.model_copy(update={"graded_items": None, "metrics": ungraded_metrics(row)})


def ungraded_metrics(row: GenerationRow) -> dict[str, float]:
    """The row's metrics but those grading gives (the rubric score and its breakdowns)."""
    return {k: v for k, v in row.metrics.items() if k != RUBRIC_METRIC and not is_breakdown(k)}


def majority(verdicts: Sequence[ItemVerdict]) -> bool | None:
    """Met where most graders that could be read say so; None where none could or they tie."""
    read = [v.met for v in verdicts if v.met is not None]
    if not read or read.count(True) * 2 == len(read):
        return None
    return read.count(True) * 2 > len(read)


def graded_row(
    row: GenerationRow, asked: InputRow, verdicts: dict[str, dict[str, ItemVerdict]]
) -> GenerationRow:
    items = []
    for request, item in zip(
        requests_of(asked, row.prediction), asked.metadata["rubrics"], strict=True
    ):
        given = [verdicts[name][request.key] for name in verdicts]
        items.append(GradedItem(**item, verdicts=given, met=majority(given)))
    metrics = ungraded_metrics(row)
    metrics.update(rubric_metrics(items, asked.metadata.get("example_tags", [])))
    return row.model_copy(update={"graded_items": items, "metrics": metrics})


def rubric_metrics(items: Sequence[GradedItem], example_tags: Sequence[str]) -> dict[str, float]:
    """The example's score and its theme:/axis: breakdowns from the items that were read."""
    read = [item for item in items if item.met is not None]
    points = [item.points for item in read]
    met = [bool(item.met) for item in read]
    score = example_score(points, met)
    if score is None:
        return {}
    tags = tag_scores(points, [item.tags for item in read], met, example_tags)
    breakdown = {f"{TAG_PREFIX}{tag}": value for tag, value in tags.items() if reported_tag(tag)}
    return {RUBRIC_METRIC: score, **breakdown}


def grade_items(
    grader: JudgeEntry, max_new_tokens: int, wanted: dict[str, ItemRequest]
) -> dict[str, ItemVerdict]:
    """Item key -> this grader's verdict, grading only the items its cache lacks."""
    cache = VerdictCache(grader_cache_key(grader, max_new_tokens))
    new = [(key, request) for key, request in wanted.items() if key not in cache.known]
    if new:
        print(
            f"[grader {grader.name}] {len(new)} rubric items to grade "
            f"({len(wanted) - len(new)} already graded)",
            file=sys.stderr,
        )
        model = load_entry(grader)
        try:
            with tqdm(total=len(new), desc=f"grade {grader.name}", unit="item", leave=False) as bar:
                for start in range(0, len(new), model.chunk_size):
                    chunk = new[start : start + model.chunk_size]
                    cache.add(item_verdicts(model, max_new_tokens, chunk))
                    bar.update(len(chunk))
        finally:
            close_engine(model)
            del model
            gc.collect()
    return {key: verdict_of(grader.name, cache.known[key]) for key in wanted}


def verdict_of(grader: str, cached: dict[str, Any]) -> ItemVerdict:
    return ItemVerdict(
        grader=grader,
        met=cached["met"],
        explanation=cached["explanation"],
        output=cached["output"],
        attempts=cached["attempts"],
    )


def item_verdicts(
    model: LanguageModel, max_new_tokens: int, chunk: list[tuple[str, ItemRequest]]
) -> list[dict[str, Any]]:
    """A chunk's verdicts; the items whose output has no readable ``criteria_met`` are
    asked once more (as simple-evals retries them), and stay unread after that."""
    outputs = model.generate([request.prompt() for _, request in chunk], max_new_tokens)
    found = [
        parse_item_verdict(out, request.answer)
        for out, (_, request) in zip(outputs, chunk, strict=True)
    ]
    attempts = [1] * len(chunk)
    retry = [i for i, (met, _) in enumerate(found) if met is None]
    if retry:
        again = model.generate([chunk[i][1].prompt() for i in retry], max_new_tokens)
        for i, output in zip(retry, again, strict=True):
            found[i], outputs[i], attempts[i] = (
                parse_item_verdict(output, chunk[i][1].answer),
                output,
                2,
            )
    return [
        {"key": key, "met": met, "explanation": explanation, "output": output, "attempts": tries}
        for (key, _), (met, explanation), output, tries in zip(
            chunk, found, outputs, attempts, strict=True
        )
    ]


@dataclass(frozen=True)
class GraderAgreement:
    """How far a grader's item verdicts agree with physicians' labels (HealthBench's
    meta-eval): macro F1 over (verdict, physician label) pairs, with its 95% interval."""

    grader: str
    macro_f1: float
    ci95: tuple[float, float]
    items: int  # rubric items whose verdict could be read
    pairs: int  # physician labels those items carry
    unread: int  # items left out: no readable verdict in two attempts


def grader_agreement(
    graders: Sequence[JudgeEntry],
    max_new_tokens: int,
    examples: Sequence[MetaExample],
    *,
    resamples: int,
    seed: int,
) -> list[GraderAgreement]:
    """Each grader's verdicts on the meta-eval's completions (cached like a run's), scored
    against the physicians' labels."""
    requests = [
        ItemRequest(conversation_text(e.conversation), e.completion, e.criterion, 1)
        for e in examples
    ]
    wanted = {request.key: request for request in requests}
    found = []
    for grader in graders:
        verdicts = grade_items(grader, max_new_tokens, wanted)
        read = [
            (met, example.labels)
            for request, example in zip(requests, examples, strict=True)
            if (met := verdicts[request.key].met) is not None
        ]
        counts = pairwise_counts([met for met, _ in read], [labels for _, labels in read])
        found.append(
            GraderAgreement(
                grader=grader.name,
                macro_f1=macro_f1(counts),
                ci95=macro_f1_interval(counts, resamples, seed),
                items=len(read),
                pairs=int(counts.sum()),
                unread=len(requests) - len(read),
            )
        )
    return found
