"""Degenerate model output is scored, never crashed on; NaN log-likelihoods are flagged."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from medharness.evaluate import evaluate_samples
from medharness.tasks import Sample, get_task
from medharness.tasks.metrics import aggregate

ODD_ANSWERS = [
    "",
    "   \n\t ",
    "word " * 20000,
    "Ärztliche Behandlung ✓ 🩺 — 医学",
    "مرض السكري هو حالة مزمنة",
    "\u202eRLO override text",
]


class Scripted:
    chunk_size = 16

    def __init__(self, outputs: Sequence[str] = (), scores: Sequence[float] = ()) -> None:
        self.outputs, self.scores = list(outputs), list(scores)

    def generate(
        self, user_messages: Sequence[str], max_new_tokens: int, progress: object = None
    ) -> list[str]:
        return [self.outputs.pop(0) for _ in user_messages]

    def loglikelihoods(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        return [self.scores.pop(0) for _ in requests]

    def describe(self) -> dict[str, Any]:
        return {"kind": "scripted"}


def test_odd_generations_are_scored() -> None:
    samples = [
        Sample(doc_id=str(i), prompt="q", target="diabetes is a chronic disease")
        for i in range(len(ODD_ANSWERS))
    ]
    task = get_task("medquad_gen")
    scored = evaluate_samples(Scripted(outputs=ODD_ANSWERS), task, samples, max_new_tokens=8)
    rows = [row.model_dump() for row in scored]
    assert [row["prediction"] for row in rows] == ODD_ANSWERS
    assert rows[0]["metrics"]["rouge1"] == 0.0 and rows[1]["metrics"]["rouge1"] == 0.0
    result = aggregate(task, scored, resamples=200, seed=1).model_dump()
    for metric in result["metrics"].values():
        assert all(math.isfinite(v) for v in [metric["value"], *metric["ci95"]])


def test_nan_loglikelihoods_are_flagged_not_averaged_in() -> None:
    task = get_task("medqa_4opt")
    samples = [
        Sample(
            doc_id=str(i),
            prompt=f"Question {i}\nAnswer:",
            target="A",
            choices=("A", "B", "C", "D"),
            gold=0,
        )
        for i in range(3)
    ]
    scores = [-0.1, -3, -3, -3, math.nan, -0.1, -3, -3, -0.1, -3, -3, -3]
    scored = evaluate_samples(Scripted(scores=scores), task, samples, max_new_tokens=1)
    rows = [row.model_dump() for row in scored]
    assert [row["invalid_loglikelihood"] for row in rows] == [False, True, False]
    assert rows[1]["chosen"] == -1 and rows[1]["metrics"]["acc"] == 0.0
    assert rows[1]["loglikelihoods"][0] is None  # NaN is not valid JSON: stored as null
    result = aggregate(task, scored, resamples=200, seed=1).model_dump()
    assert result["settings"]["invalid_loglikelihood"] == 1
    assert result["metrics"]["acc"]["value"] == 2 / 3
