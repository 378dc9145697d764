"""Inter-judge agreement: Krippendorff's alpha (interval level) with a bootstrap interval.

Alpha takes any number of judges and answers a judge left unscored, which a jury's output
has; checked against the ``krippendorff`` package in the tests. It is invariant to linear
rescaling, so raw rubric scores and fractions of the scale give the same value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medharness.core.records import GenerationRow, SampleRow
from medharness.tasks.metrics.stats import bootstrap_indices, percentile_interval


def _unit_sums(units: Sequence[Sequence[float]]) -> np.ndarray:
    """Per unit with at least two values: (m, sum, sum of squares)."""
    rows = [
        (len(values), float(sum(values)), float(sum(v * v for v in values)))
        for values in units
        if len(values) >= 2
    ]
    return np.array(rows, dtype=float).reshape(-1, 3)


def _alpha_from_sums(sums: np.ndarray) -> float | None:
    m, s1, s2 = sums[:, 0], sums[:, 1], sums[:, 2]
    n = m.sum()
    if n < 2:
        return None
    # squared differences over all ordered pairs of a set: 2 (m * sum v^2 - (sum v)^2)
    observed = (2 * (m * s2 - s1**2) / (m - 1)).sum() / n
    expected = 2 * (n * s2.sum() - s1.sum() ** 2) / (n * (n - 1))
    return None if expected <= 0 else float(1 - observed / expected)


def krippendorff_alpha(units: Sequence[Sequence[float]]) -> float | None:
    """Alpha over units (answers), each the scores its judges gave; None where it is
    undefined (fewer than two pairable scores, or every score the same)."""
    return _alpha_from_sums(_unit_sums(units))


def alpha_interval(
    units: Sequence[Sequence[float]], resamples: int, seed: int
) -> tuple[float, float] | None:
    """95% percentile bootstrap interval of alpha, resampling answers."""
    sums = _unit_sums(units)
    if len(sums) < 2:
        return None
    draws = [
        value
        for picked in bootstrap_indices(len(sums), resamples, seed)
        if (value := _alpha_from_sums(sums[picked])) is not None
    ]
    if len(draws) < resamples / 2:
        return None
    low, high = np.percentile(draws, [2.5, 97.5])
    return float(low), float(high)


def jury_agreement(rows: Sequence[SampleRow], resamples: int, seed: int) -> dict[str, Any]:
    """Per criterion, the judges' alpha over a task's answers with its interval, and per
    judge how many answers it left without any readable score."""
    judged = [row.judgments for row in rows if isinstance(row, GenerationRow) and row.judgments]
    judges = list(dict.fromkeys(j.judge for judgments in judged for j in judgments))
    criteria = list(dict.fromkeys(c for js in judged for j in js for c in j.scores))
    agreement: dict[str, Any] = {}
    if len(judges) >= 2:
        for criterion in criteria:
            units = [[j.scores[criterion] for j in js if criterion in j.scores] for js in judged]
            alpha = krippendorff_alpha(units)
            agreement[criterion] = {
                "krippendorff_alpha": alpha,
                "ci95": alpha_interval(units, resamples, seed) if alpha is not None else None,
                "answers": sum(len(unit) >= 2 for unit in units),
            }
    return {
        "judges": judges,
        "answers": len(judged),
        "unreadable": {
            judge: sum(not j.scores for js in judged for j in js if j.judge == judge)
            for judge in judges
        },
        "retried": {
            judge: sum(j.attempts > 1 for js in judged for j in js if j.judge == judge)
            for judge in judges
        },
        "agreement": agreement,
        "agreement_measure": "Krippendorff's alpha, interval level; 95% percentile bootstrap "
        "over answers",
    }


def pairwise_counts(predictions: Sequence[bool], labels: Sequence[Sequence[bool]]) -> np.ndarray:
    """Per example, (true pos, false pos, false neg, true neg) of the grader's verdict against
    each physician's label: simple-evals' meta-eval pairs the grader with every physician
    (healthbench_meta_eval.py, ``compute_metrics_for_rater_by_class``), not with a majority."""
    rows = []
    for predicted, given in zip(predictions, labels, strict=True):
        yes = sum(given)
        no = len(given) - yes
        rows.append((yes, no, 0, 0) if predicted else (0, 0, yes, no))
    return np.array(rows, dtype=float).reshape(-1, 4)


def macro_f1(counts: np.ndarray) -> float:
    """The mean of the F1 of "met" and the F1 of "not met" over the summed pairs (simple-
    evals' balanced F1; a class no pair predicts or holds has F1 0)."""
    tp, fp, fn, tn = counts.sum(axis=0)
    met = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    unmet = 2 * tn / (2 * tn + fn + fp) if tn + fn + fp else 0.0
    return float((met + unmet) / 2)


def macro_f1_interval(counts: np.ndarray, resamples: int, seed: int) -> tuple[float, float]:
    """95% percentile bootstrap of macro F1, resampling examples (a completion's labels
    stay together)."""
    if len(counts) < 2:
        value = macro_f1(counts)
        return value, value
    replicates = [
        macro_f1(counts[rows]) for rows in bootstrap_indices(len(counts), resamples, seed)
    ]
    return percentile_interval(np.array(replicates))
