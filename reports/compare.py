"""Paired comparisons of two models on the same samples, and per-group breakdowns.

Used by reports, the gate and card verdicts. Paired tests fit here because both models
answered the same questions: the per-question differences carry the signal, not the two
marginal scores. Which test each metric takes (McNemar exact for accuracy, a paired
bootstrap otherwise, BLEU recomputed per resample) is part of the metric's definition in
``medharness.tasks.metrics``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from statistics import median
from typing import Any, Literal

import numpy as np
from scipy.stats import norm

from medharness.core.errors import UserError
from medharness.core.records import InputRow, SampleRow
from medharness.tasks.metrics import metric as metric_of
from medharness.tasks.metrics.stats import (
    Correction,
    adjust_p_values,
    percentile_interval,
    two_sided_bootstrap_p,
)
from medharness.tasks.metrics.suites import paired_suite_difference, suite_test_name

Verdict = Literal["better", "worse", "no significant difference"]
ALPHA = 0.05


@dataclass(frozen=True)
class Comparison:
    """Candidate minus baseline on one metric of one task, with its test."""

    task: str
    metric: str
    baseline: str
    candidate: str
    n: int
    baseline_value: float
    candidate_value: float
    difference: float  # in the metric's own units (0-1, or 0-100 for BLEU)
    ci95: tuple[float, float]
    p_value: float
    test: str
    effect_size: float | None
    effect_name: str
    verdict: Verdict
    detectable: float = 0.0  # smallest difference n detects with 80% power (metric's units)
    identical: bool = False  # both models wrote the very same rows: nothing to test
    by_construction: bool = False  # same weights and settings, same prompts: equal anyway
    p_adjusted: float | None = None  # after the report's multiple-comparison correction
    correction: str = "none"

    def interval_disagrees(self) -> bool:
        """Whether the (unadjusted) 95% interval tells otherwise than the verdict: it
        excludes zero where the verdict, on an adjusted p or an exact test, says no
        difference, or the other way round."""
        low, high = self.ci95
        excludes_zero = low > 0 or high < 0
        return excludes_zero != (self.verdict != "no significant difference")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ci95"] = list(self.ci95)
        return data


def verdict(
    difference: float, p_value: float, alpha: float = ALPHA, higher_is_better: bool = True
) -> Verdict:
    if p_value >= alpha or difference == 0:
        return "no significant difference"
    return "better" if (difference > 0) == higher_is_better else "worse"


def pair_rows(
    baseline: Sequence[SampleRow], candidate: Sequence[SampleRow], what: str
) -> tuple[list[SampleRow], list[SampleRow]]:
    """Align two sample logs by doc_id; different sample sets cannot be compared."""
    by_id = {row.doc_id: row for row in candidate}
    missing = [row.doc_id for row in baseline if row.doc_id not in by_id]
    if missing or len(by_id) != len(baseline):
        raise UserError(
            f"{what}: the two models were not scored on the same samples "
            f"({len(baseline)} vs {len(candidate)} samples, {len(missing)} not shared)"
        )
    return list(baseline), [by_id[row.doc_id] for row in baseline]


def compare_task(
    task: str,
    baseline_name: str,
    candidate_name: str,
    baseline_rows: Sequence[SampleRow],
    candidate_rows: Sequence[SampleRow],
    metrics: Iterable[str],
    *,
    resamples: int = 1000,
    seed: int = 1234,
    alpha: float = ALPHA,
) -> list[Comparison]:
    base, cand = pair_rows(
        baseline_rows, candidate_rows, f"{task}: {baseline_name} vs {candidate_name}"
    )
    identical = all(a.model_dump() == b.model_dump() for a, b in zip(base, cand, strict=True))
    comparisons = []
    for metric in metrics:
        definition = metric_of(metric).on([*base, *cand])
        if definition.optional and not len(definition.scored(base, cand)[0]):
            continue  # no question both models have a score for
        value_a, value_b, resampled = definition.paired_differences(
            base, cand, resamples=resamples, seed=seed
        )
        exact_p, effect_size = definition.exact_test(base, cand)
        p_value = exact_p if exact_p is not None else two_sided_bootstrap_p(resampled)
        difference = value_b - value_a
        interval = percentile_interval(resampled)
        comparisons.append(
            Comparison(
                task=task,
                metric=metric,
                baseline=baseline_name,
                candidate=candidate_name,
                n=len(base),
                baseline_value=value_a,
                candidate_value=value_b,
                difference=difference,
                ci95=interval,
                p_value=p_value,
                test=definition.test_name(resamples),
                effect_size=effect_size,
                effect_name=definition.effect_name,
                verdict=verdict(difference, p_value, alpha, definition.higher_is_better),
                detectable=detectable_difference(resampled),
                identical=identical,
            )
        )
    return comparisons


def detectable_difference(resampled: Sequence[float] | np.ndarray, alpha: float = ALPHA) -> float:
    """The smallest true difference a paired test on these samples finds with 80% power at
    level ``alpha`` (two-sided): (z_{1-alpha/2} + z_{0.8}) standard errors, the standard
    error being the spread of the resampled differences."""
    spread = (
        float(np.std(np.asarray(resampled, dtype=float), ddof=1)) if len(resampled) > 1 else 0.0
    )
    return float((norm.ppf(1 - alpha / 2) + norm.ppf(0.8)) * spread)


def compare_suite(
    suite: str,
    baseline_name: str,
    candidate_name: str,
    baseline_logs: Mapping[str, Sequence[SampleRow]],
    candidate_logs: Mapping[str, Sequence[SampleRow]],
    metrics: Iterable[str],
    *,
    resamples: int = 1000,
    seed: int = 1234,
    alpha: float = ALPHA,
) -> list[Comparison]:
    """Candidate minus baseline on a suite's average (task -> sample log on each side): a
    paired bootstrap that resamples questions within each task."""
    pairs = [
        pair_rows(
            base, candidate_logs[task], f"{suite}/{task}: {baseline_name} vs {candidate_name}"
        )
        for task, base in baseline_logs.items()
    ]
    base, cand = [a for a, _ in pairs], [b for _, b in pairs]
    comparisons = []
    for metric in metrics:
        value_a, value_b, resampled = paired_suite_difference(
            metric, base, cand, resamples=resamples, seed=seed
        )
        p_value = two_sided_bootstrap_p(resampled)
        difference = value_b - value_a
        comparisons.append(
            Comparison(
                task=suite,
                metric=metric,
                baseline=baseline_name,
                candidate=candidate_name,
                n=sum(len(rows) for rows in base),
                baseline_value=value_a,
                candidate_value=value_b,
                difference=difference,
                ci95=percentile_interval(resampled),
                p_value=p_value,
                test=suite_test_name(resamples),
                effect_size=None,
                effect_name="",
                verdict=verdict(difference, p_value, alpha, metric_of(metric).higher_is_better),
            )
        )
    return comparisons


def breakdown(
    rows: Sequence[SampleRow],
    inputs: Mapping[str, InputRow],
    key: str,
    metric: str,
) -> dict[str, tuple[float, int]]:
    """Mean of a per-sample metric for each value of a metadata key: {group: (mean, n)}.
    ``inputs`` maps doc_id to what the models were asked, metadata included."""
    groups: dict[str, list[float]] = {}
    for row in rows:
        asked = inputs.get(row.doc_id)
        group = str((asked.metadata.get(key) if asked else None) or "(none)")
        if metric in row.metrics:  # a jury may have left an answer without a score
            groups.setdefault(group, []).append(float(row.metrics[metric]))
    return {group: (sum(v) / len(v), len(v)) for group, v in sorted(groups.items())}


def answer_lengths(rows: Sequence[SampleRow]) -> dict[str, float]:
    """Words per generated answer and per reference: mean and median of each."""
    generated = [len(row.prediction.split()) for row in rows]
    reference = [len(row.target.split()) for row in rows]
    return {
        "generated_mean": sum(generated) / len(generated),
        "generated_median": float(median(generated)),
        "reference_mean": sum(reference) / len(reference),
        "reference_median": float(median(reference)),
    }


def corrected(comparisons: Sequence[Comparison], method: Correction) -> list[Comparison]:
    """The comparisons made together (one report), each with its adjusted p-value and the
    verdict that p-value gives."""
    adjusted = adjust_p_values([c.p_value for c in comparisons], method)
    return [
        replace(
            c,
            p_adjusted=p,
            correction=method,
            verdict=verdict(c.difference, p, ALPHA, metric_of(c.metric).higher_is_better),
        )
        for c, p in zip(comparisons, adjusted, strict=True)
    ]
