"""HealthBench (OpenAI, 2025): conversations graded item by item against physician rubrics.

Each line of the official JSONL is one conversation (``prompt``: chat messages ending with a
user turn), its ``rubrics`` (items with ``criterion``, ``points`` positive or negative, and
``tags`` such as ``axis:accuracy``), its ``example_tags`` (``theme:...``) and ``prompt_id``.
The model answers the conversation; the run's graders judge each rubric item met or not met
(medharness.grading); the score is simple-evals' (tasks/judging/items.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medharness.core.errors import UserError
from medharness.core.io import sha256_file
from medharness.tasks.base import (
    Conversation,
    LoadedData,
    Sample,
    Task,
    conversation_text,
    require_text,
)

DATA_SUBDIR = "healthbench"
# simple-evals' INPUT_PATH, INPUT_PATH_HARD, INPUT_PATH_CONSENSUS and the meta-eval file
FILES = {
    "healthbench": "2025-05-07-06-14-12_oss_eval.jsonl",
    "healthbench_hard": "hard_2025-05-08-21-00-10.jsonl",
    "healthbench_consensus": "consensus_2025-05-09-20-00-46.jsonl",
    "healthbench_meta": "2025-05-07-06-14-12_oss_meta_eval.jsonl",
}
ROLES = ("system", "user", "assistant")
METRIC = "healthbench"  # the per-example score; its tag breakdowns are healthbench:<tag>


def jsonl_lines(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(where, object)`` for every non-blank line, ``where`` naming file and line."""
    if not path.is_file():
        raise UserError(f"{path}: not found; run `medharness data pull healthbench`")
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}: line {number}"
            try:
                data = json.loads(line)
            except ValueError as exc:
                raise UserError(f"{where}: not JSON ({exc})") from None
            if not isinstance(data, dict):
                raise UserError(f"{where}: must be a JSON object")
            yield where, data


def conversation_of(value: Any, where: str) -> Conversation:
    """``prompt``: chat messages, each a role and non-empty text, the last a user's."""
    if not isinstance(value, list) or not value:
        raise UserError(f"{where}: prompt: must be a non-empty list of chat messages")
    turns = []
    for i, message in enumerate(value):
        field = f"prompt[{i}]"
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise UserError(f"{where}: {field}.role: must be one of {', '.join(ROLES)}")
        turns.append((message["role"], require_text(message.get("content"), where, field)))
    if turns[-1][0] != "user":
        raise UserError(f"{where}: prompt: the last message must be the user's")
    return tuple(turns)


def rubric_of(value: Any, where: str) -> list[dict[str, Any]]:
    """``rubrics``: a non-empty list of items, each a criterion, numeric points, and tags."""
    if not isinstance(value, list) or not value:
        raise UserError(f"{where}: rubrics: must be a non-empty list of rubric items")
    items, positive = [], False
    for i, item in enumerate(value):
        field = f"rubrics[{i}]"
        if not isinstance(item, dict):
            raise UserError(f"{where}: {field}: must be an object")
        points = item.get("points")
        if isinstance(points, bool) or not isinstance(points, int | float):
            raise UserError(f"{where}: {field}.points: must be a number, not {points!r}")
        tags = item.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise UserError(f"{where}: {field}.tags: must be a list of text")
        criterion = require_text(item.get("criterion"), where, f"{field}.criterion")
        items.append({"criterion": criterion, "points": points, "tags": tags})
        positive = positive or points > 0
    if not positive:
        raise UserError(f"{where}: rubrics: no item has positive points (the score's divisor)")
    return items


def to_sample(where: str, data: dict[str, Any]) -> Sample:
    turns = conversation_of(data.get("prompt"), where)
    tags = data.get("example_tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise UserError(f"{where}: example_tags: must be a list of text")
    return Sample(
        doc_id=require_text(data.get("prompt_id"), where, "prompt_id"),
        prompt=conversation_text(turns),
        target="",
        conversation=turns,
        metadata={
            "rubrics": rubric_of(data.get("rubrics"), where),
            "example_tags": tags,
        },
    )


def loader(name: str) -> Any:
    def load(root: Path) -> LoadedData:
        path = root / FILES[name]
        samples = [to_sample(where, data) for where, data in jsonl_lines(path)]
        ids = [s.doc_id for s in samples]
        if len(set(ids)) != len(ids):
            repeated = sorted({i for i in ids if ids.count(i) > 1})[:3]
            raise UserError(f"{path}: prompt_id: repeated ({', '.join(repeated)})")
        return LoadedData(samples, {f"{DATA_SUBDIR}/{FILES[name]}": sha256_file(path)})

    return load


def healthbench_task(name: str, summary: str) -> Task:
    return Task(
        name=name,
        version="1",
        kind="generate",
        summary=summary,
        data_subdir=DATA_SUBDIR,
        obtain_hint=f"medharness data pull healthbench (the file {FILES[name]})",
        load=loader(name),
        metric_names=(METRIC,),
        rubric_graded=True,
    )


HEALTHBENCH = healthbench_task(
    "healthbench", "HealthBench: 5,000 health conversations graded by physician rubric items"
)
HEALTHBENCH_HARD = healthbench_task(
    "healthbench_hard", "HealthBench Hard: the 1,000 conversations models found hardest"
)
HEALTHBENCH_CONSENSUS = healthbench_task(
    "healthbench_consensus", "HealthBench Consensus: items several physicians agreed on"
)
HEALTHBENCH_TASKS = (HEALTHBENCH, HEALTHBENCH_HARD, HEALTHBENCH_CONSENSUS)


@dataclass(frozen=True)
class MetaExample:
    """One line of the meta-eval file: a completion, one rubric item, physicians' labels."""

    where: str
    conversation: Conversation
    completion: str
    criterion: str
    labels: tuple[bool, ...]
    category: str


def load_meta(path: Path) -> list[MetaExample]:
    examples = []
    for where, data in jsonl_lines(path):
        labels = data.get("binary_labels")
        if (
            not isinstance(labels, list)
            or not labels
            or not all(isinstance(b, bool) for b in labels)
        ):
            raise UserError(f"{where}: binary_labels: must be a non-empty list of true/false")
        examples.append(
            MetaExample(
                where=where,
                conversation=conversation_of(data.get("prompt"), where),
                completion=require_text(data.get("completion"), where, "completion"),
                criterion=require_text(data.get("rubric"), where, "rubric"),
                labels=tuple(labels),
                category=str(data.get("category", "")),
            )
        )
    return examples
