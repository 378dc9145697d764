"""Paired comparisons of two models on the same samples, and per-group breakdowns.

Used by reports and the gate. Paired tests fit here because both models answered the same
questions: the per-question differences carry the signal, not the two marginal scores.
- accuracy: McNemar's exact test on the discordant pairs (binomial, two-sided);
- ROUGE (per-sample means): paired bootstrap of the mean difference;
- BLEU (a corpus metric): paired bootstrap recomputing both corpus scores on each resample.
Paired-bootstrap p-values are two-sided: twice the smaller share of resampled differences
on either side of zero, with the usual +1 correction so that p is never 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from statistics import median
from typing import Any, Literal

import numpy as np

from harness.errors import UserError
from harness.evaluate import bleu_statistics_of
from harness.stats import CONFIDENCE, bootstrap_indices, resample_counts
from tasks.metrics import bleu_from_statistics, bleu_from_statistics_batch

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

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ci95"] = list(self.ci95)
        return data


def verdict(difference: float, p_value: float, alpha: float = ALPHA) -> Verdict:
    if p_value >= alpha or difference == 0:
        return "no significant difference"
    return "better" if difference > 0 else "worse"


def pair_rows(
    baseline: Sequence[dict[str, Any]], candidate: Sequence[dict[str, Any]], what: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Align two sample logs by doc_id; different sample sets cannot be compared."""
    by_id = {row["doc_id"]: row for row in candidate}
    missing = [row["doc_id"] for row in baseline if row["doc_id"] not in by_id]
    if missing or len(by_id) != len(baseline):
        raise UserError(
            f"{what}: the two models were not scored on the same samples "
            f"({len(baseline)} vs {len(candidate)} samples, {len(missing)} not shared)"
        )
    return list(baseline), [by_id[row["doc_id"]] for row in baseline]


def _two_sided_bootstrap_p(differences: np.ndarray) -> float:
    below = int((differences <= 0).sum())
    above = int((differences >= 0).sum())
    return min(1.0, 2 * (min(below, above) + 1) / (len(differences) + 1))


def _interval(values: np.ndarray) -> tuple[float, float]:
    alpha = (1 - CONFIDENCE) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return float(low), float(high)


def mcnemar_exact(baseline_correct: Sequence[bool], candidate_correct: Sequence[bool]) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs: twice the binomial(n, 1/2)
    tail of the smaller count, capped at 1 (statsmodels' ``mcnemar(exact=True)``)."""
    pairs = list(zip(map(bool, baseline_correct), map(bool, candidate_correct), strict=True))
    lost = sum(1 for b, c in pairs if b and not c)
    won = sum(1 for b, c in pairs if c and not b)
    n = lost + won
    if n == 0:
        return 1.0
    # log-space binomial pmf: exact sums of math.comb get slow for thousands of pairs
    log_half_n = n * math.log(0.5) + math.lgamma(n + 1)
    terms = [
        log_half_n - math.lgamma(k + 1) - math.lgamma(n - k + 1) for k in range(min(lost, won) + 1)
    ]
    top = max(terms)
    tail = math.exp(top) * sum(math.exp(t - top) for t in terms)
    return min(1.0, 2 * tail)


def paired_differences(
    base: Sequence[dict[str, Any]],
    cand: Sequence[dict[str, Any]],
    metric: str,
    *,
    resamples: int,
    seed: int,
) -> tuple[float, float, np.ndarray]:
    """Baseline value, candidate value, and the candidate-minus-baseline difference on each
    paired bootstrap resample (the same resampled questions for both models). BLEU is
    recomputed per resample from the summed sufficient statistics; other metrics are means."""
    if metric == "bleu":
        stats_a, stats_b = bleu_statistics_of(base), bleu_statistics_of(cand)
        counts = resample_counts(len(base), resamples, seed).astype(np.float64)
        resampled = bleu_from_statistics_batch(
            counts @ stats_b.astype(np.float64)
        ) - bleu_from_statistics_batch(counts @ stats_a.astype(np.float64))
        value_a = bleu_from_statistics(stats_a.sum(axis=0))
        value_b = bleu_from_statistics(stats_b.sum(axis=0))
        return value_a, value_b, resampled
    a = np.array([row["metrics"][metric] for row in base], dtype=float)
    b = np.array([row["metrics"][metric] for row in cand], dtype=float)
    resampled = (b - a)[bootstrap_indices(len(a), resamples, seed)].mean(axis=1)
    return float(a.mean()), float(b.mean()), resampled


def _effect(
    base: Sequence[dict[str, Any]], cand: Sequence[dict[str, Any]], metric: str
) -> tuple[float | None, float | None]:
    """(McNemar p-value or None, effect size) for the metric's paired test."""
    if metric == "bleu":
        return None, None
    a = np.array([row["metrics"][metric] for row in base], dtype=float)
    b = np.array([row["metrics"][metric] for row in cand], dtype=float)
    if metric == "acc":
        lost, won = int(((a > 0.5) & (b < 0.5)).sum()), int(((b > 0.5) & (a < 0.5)).sum())
        odds = won / lost if lost else (math.inf if won else None)
        return mcnemar_exact(list(a > 0.5), list(b > 0.5)), odds
    diffs = b - a
    spread = float(diffs.std(ddof=1)) if len(diffs) > 1 else 0.0
    return None, float(diffs.mean()) / spread if spread > 0 else None


TESTS = {
    "acc": ("McNemar exact", "odds ratio (won/lost questions)"),
    "bleu": ("paired bootstrap ({resamples} resamples)", ""),
}
MEAN_TEST = ("paired bootstrap ({resamples} resamples)", "Cohen's d_z")


def compare_task(
    task: str,
    baseline_name: str,
    candidate_name: str,
    baseline_rows: Sequence[dict[str, Any]],
    candidate_rows: Sequence[dict[str, Any]],
    metrics: Iterable[str],
    *,
    resamples: int = 1000,
    seed: int = 1234,
    alpha: float = ALPHA,
) -> list[Comparison]:
    base, cand = pair_rows(
        baseline_rows, candidate_rows, f"{task}: {baseline_name} vs {candidate_name}"
    )
    comparisons = []
    for metric in metrics:
        value_a, value_b, resampled = paired_differences(
            base, cand, metric, resamples=resamples, seed=seed
        )
        exact_p, effect_size = _effect(base, cand, metric)
        p_value = exact_p if exact_p is not None else _two_sided_bootstrap_p(resampled)
        test, effect = TESTS.get(metric, MEAN_TEST)
        difference = value_b - value_a
        interval = _interval(resampled)
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
                test=test.format(resamples=resamples),
                effect_size=effect_size,
                effect_name=effect,
                verdict=verdict(difference, p_value, alpha),
            )
        )
    return comparisons


def breakdown(
    rows: Sequence[dict[str, Any]],
    metadata: Mapping[str, Mapping[str, Any]],
    key: str,
    metric: str,
) -> dict[str, tuple[float, int]]:
    """Mean of a per-sample metric for each value of a metadata key: {group: (mean, n)}.
    ``metadata`` maps doc_id to that sample's metadata."""
    groups: dict[str, list[float]] = {}
    for row in rows:
        group = str(metadata.get(row["doc_id"], {}).get(key) or "(none)")
        groups.setdefault(group, []).append(float(row["metrics"][metric]))
    return {group: (sum(v) / len(v), len(v)) for group, v in sorted(groups.items())}


def answer_lengths(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Words per generated answer and per reference: mean and median of each."""
    generated = [len(row["prediction"].split()) for row in rows]
    reference = [len(row["target"].split()) for row in rows]
    return {
        "generated_mean": sum(generated) / len(generated),
        "generated_median": float(median(generated)),
        "reference_mean": sum(reference) / len(reference),
        "reference_median": float(median(reference)),
    }
