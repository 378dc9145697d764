"""Put a task's samples to a model, score each sample, and aggregate with 95% intervals."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from harness.models import LanguageModel
from harness.stats import bootstrap_corpus_ci, bootstrap_mean_ci, exact_binomial_ci
from tasks import Sample, Task
from tasks.metrics import (
    DISCLAIMER_PATTERN,
    ROUGE_SETTINGS,
    ROUGE_TYPES,
    accuracy,
    bleu_from_statistics,
    bleu_from_statistics_batch,
    bleu_signature,
    has_disclaimer,
    rouge_rows,
)
from tasks.textscore import bleu_statistics


def evaluate_chunks(
    model: LanguageModel,
    task: Task,
    samples: Sequence[Sample],
    *,
    max_new_tokens: int,
    label: str,
    already_done: int = 0,
) -> Iterator[list[dict[str, Any]]]:
    """Score samples a chunk at a time, yielding JSON-ready rows (prediction, per-sample
    metrics, what produced them) so the caller can persist each chunk before the next.

    Samples go longest first, as lm-eval orders its requests: batches of similar length
    waste little on padding (in prompt order a chunk of MedQA questions pads ~10% more),
    and a too-long batch fails at once. The order is a stable sort, so what is left after an
    interruption is the tail of the same order and is batched as it would have been."""
    ordered = sorted(samples, key=_length, reverse=True)
    total = already_done + len(samples)
    with tqdm(total=total, initial=already_done, desc=label, unit="doc", leave=False) as bar:
        for start in range(0, len(ordered), model.chunk_size):
            chunk = ordered[start : start + model.chunk_size]
            if task.kind == "multiple_choice":
                rows = _score_choices(model, task, chunk)
            else:
                outputs = model.generate([s.prompt for s in chunk], max_new_tokens)
                targets = [s.target for s in chunk]
                rows = [
                    _generation_row(sample, output, rouge, stats)
                    for sample, output, rouge, stats in zip(
                        chunk,
                        outputs,
                        rouge_rows(outputs, targets),
                        bleu_statistics(outputs, targets),
                        strict=True,
                    )
                ]
            yield rows
            bar.update(len(chunk))


def _length(sample: Sample) -> int:
    return len(sample.prompt) + max((len(choice) for choice in sample.choices), default=0)


def evaluate_samples(
    model: LanguageModel,
    task: Task,
    samples: Sequence[Sample],
    *,
    max_new_tokens: int,
    label: str = "",
) -> list[dict[str, Any]]:
    """All rows at once, in the samples' order, for callers that need no persistence
    between chunks."""
    rows = {
        row["doc_id"]: row
        for chunk in evaluate_chunks(
            model, task, samples, max_new_tokens=max_new_tokens, label=label
        )
        for row in chunk
    }
    return [rows[sample.doc_id] for sample in samples]


def _score_choices(
    model: LanguageModel, task: Task, chunk: Sequence[Sample]
) -> list[dict[str, Any]]:
    requests = [
        (sample.prompt, task.target_delimiter + choice)
        for sample in chunk
        for choice in sample.choices
    ]
    scores = iter(model.loglikelihoods(requests))
    rows = []
    for sample in chunk:
        values = [next(scores) for _ in sample.choices]
        invalid = any(math.isnan(v) for v in values)
        chosen = -1 if invalid else int(np.argmax(values))
        top = 0.0 if invalid else max(values)
        weights = [] if invalid else [math.exp(v - top) for v in values]
        assert sample.gold is not None
        rows.append(
            {
                "doc_id": sample.doc_id,
                "target": sample.target,
                "prediction": sample.choices[chosen] if chosen >= 0 else "",
                "choices": list(sample.choices),
                "loglikelihoods": [None if math.isnan(v) else v for v in values],
                "chosen": chosen,
                # softmax over the options: how sure the model was of its choice
                "chosen_probability": weights[chosen] / sum(weights) if weights else None,
                "gold": sample.gold,
                "invalid_loglikelihood": invalid,
                "metrics": {"acc": accuracy(chosen, sample.gold)},
            }
        )
    return rows


def _generation_row(
    sample: Sample, output: str, rouge: dict[str, float], bleu_stats: np.ndarray
) -> dict[str, Any]:
    return {
        "doc_id": sample.doc_id,
        "target": sample.target,
        "prediction": output,
        "metrics": {**rouge, "disclaimer_rate": has_disclaimer(output)},
        # sacrebleu's per-sample sufficient statistics: corpus BLEU of any subset is a sum away
        "bleu_stats": [int(v) for v in bleu_stats],
    }


def bleu_statistics_of(rows: Sequence[dict[str, Any]]) -> np.ndarray:
    """The rows' stored BLEU statistics; recomputed only for logs written without them."""
    if rows and all("bleu_stats" in row for row in rows):
        return np.asarray([row["bleu_stats"] for row in rows], dtype=np.int64)
    return bleu_statistics([row["prediction"] for row in rows], [row["target"] for row in rows])


def input_row(sample: Sample) -> dict[str, Any]:
    """What every model was asked about one sample: written once per run, not per model."""
    row: dict[str, Any] = {
        "doc_id": sample.doc_id,
        "prompt": sample.prompt,
        "target": sample.target,
    }
    if sample.choices:
        row["choices"], row["gold"] = list(sample.choices), sample.gold
    row["metadata"] = dict(sample.metadata)
    return row


def aggregate(
    task: Task, rows: Sequence[dict[str, Any]], *, resamples: int, seed: int
) -> dict[str, Any]:
    """Task result: ``n``, each metric's value with its 95% interval, and how it was computed."""
    n = len(rows)
    metrics: dict[str, dict[str, Any]] = {}
    settings: dict[str, Any] = {}
    if task.kind == "multiple_choice":
        correct = int(sum(row["metrics"]["acc"] for row in rows))
        metrics["acc"] = {"value": correct / n, "ci95": list(exact_binomial_ci(correct, n))}
        settings["acc"] = {"interval": "Clopper-Pearson exact"}
        invalid = sum(bool(row.get("invalid_loglikelihood")) for row in rows)
        if invalid:
            settings["invalid_loglikelihood"] = invalid
    else:
        for name in ROUGE_TYPES:
            values = np.array([row["metrics"][name] for row in rows])
            metrics[name] = {
                "value": float(values.mean()),
                "ci95": list(bootstrap_mean_ci(values, resamples, seed)),
            }
        statistics = bleu_statistics_of(rows)
        metrics["bleu"] = {
            "value": bleu_from_statistics(statistics.sum(axis=0)),
            "ci95": list(
                bootstrap_corpus_ci(statistics, bleu_from_statistics_batch, resamples, seed)
            ),
        }
        flagged = int(sum(row["metrics"].get("disclaimer_rate", 0.0) for row in rows))
        metrics["disclaimer_rate"] = {
            "value": flagged / n,
            "ci95": list(exact_binomial_ci(flagged, n)),
        }
        settings["rouge"] = ROUGE_SETTINGS
        settings["disclaimer_rate"] = {
            "share of answers matching": DISCLAIMER_PATTERN.pattern,
            "interval": "Clopper-Pearson exact",
        }
        settings["bleu"] = {
            "package": "sacrebleu",
            "implementation": "tasks/textscore.py statistics, sacrebleu's score from them",
            "signature": bleu_signature(),
            "scale": "0-100",
        }
        settings["bootstrap"] = {"resamples": resamples, "seed": seed, "method": "percentile"}
    return {"n": n, "metrics": metrics, "settings": settings}
