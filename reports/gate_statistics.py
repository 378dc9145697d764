"""The statistics behind the gate's margins: the paired drop of a candidate from its
baseline with its 95% interval, and the questions an interval needs to decide a rule.

The drop of a proportion (accuracy, a rate) has Tango's score interval for paired
proportions; any other metric the paired percentile bootstrap of its difference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from medharness.core.records import SampleRow
from medharness.reports.compare import pair_rows
from medharness.tasks.metrics import Metric
from medharness.tasks.metrics import metric as metric_of
from medharness.tasks.metrics.stats import normal_quantile, tango_paired_difference_ci
from medharness.tasks.metrics.suites import paired_suite_difference

CONFIDENCE = 0.95  # two-sided level of every interval a margin or a floor judges
POWER = 0.80  # of the sample sizes the gate plans and suggests


def z_of(confidence: float) -> float:
    return normal_quantile(1 - (1 - confidence) / 2)


def questions_to_decide(spread: float, distance: float) -> int | None:
    """Questions for a 95% interval to exclude a threshold ``distance`` away from the true
    value with 80% power, when one question's score (or paired difference) has standard
    deviation ``spread``: n = ((z_0.975 + z_0.80) * spread / distance)^2. None when no
    number does (the value sits on the threshold)."""
    if distance == 0:
        return None
    return max(1, math.ceil(((z_of(CONFIDENCE) + normal_quantile(POWER)) * spread / distance) ** 2))


@dataclass(frozen=True)
class PairedDrop:
    """Baseline minus candidate on the same questions, in points, in the direction of worse
    (a higher error rate is a drop too)."""

    drop: float
    interval: tuple[float, float]  # 95%
    method: str
    spread: float  # standard deviation of one question's difference, in points
    n: int
    baseline_value: float
    candidate_value: float
    baseline_points: float
    resampled: np.ndarray | None  # bootstrap replicates of the drop, in points

    def drop_quantile(self, alpha: float) -> float:
        """The one-sided (1 - alpha) lower bound of the drop (paired bootstrap)."""
        assert self.resampled is not None
        return float(np.quantile(self.resampled, alpha))


def paired_drop(
    metric: str,
    baseline_rows: list[SampleRow],
    candidate_rows: list[SampleRow],
    *,
    resamples_and_seed: tuple[int, int],
) -> PairedDrop:
    """The paired drop and its 95% interval: Tango's score interval for a proportion (the
    per-question scores are 0 or 1), else the percentile bootstrap of the difference (of
    per-question means, where questions were answered several times)."""
    base, cand = pair_rows(baseline_rows, candidate_rows, metric)
    definition = metric_of(metric).on([*base, *cand])
    resamples, seed = resamples_and_seed
    value_a, value_b, resampled = definition.paired_differences(
        base, cand, resamples=resamples, seed=seed
    )
    worse = -1.0 if definition.higher_is_better else 1.0  # sign that turns a change into a drop
    if definition.summary == "proportion":
        scale = definition.points_factor
        drop = worse * (value_b - value_a) * scale
        return proportion_drop(
            definition, base, cand, drop, worse * resampled * scale, value_a, value_b
        )
    n = len(definition.scored(base, cand)[0]) if definition.summary != "corpus_bleu" else len(base)
    method = f"paired percentile bootstrap, {resamples} resamples"
    return bootstrap_drop(definition, value_a, value_b, resampled, n, method)


def bootstrap_drop(
    definition: Metric,
    value_a: float,
    value_b: float,
    resampled: np.ndarray,
    n: int,
    method: str,
) -> PairedDrop:
    """The drop (in points, a rise where lower is better) with the percentile interval of
    its resampled values; ``n`` questions behind it."""
    worse = -1.0 if definition.higher_is_better else 1.0
    scale = definition.points_factor
    drops = worse * np.asarray(resampled) * scale
    low, high = np.quantile(drops, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    return PairedDrop(
        drop=worse * (value_b - value_a) * scale,
        interval=(float(low), float(high)),
        method=method,
        spread=float(np.std(drops)) * math.sqrt(n),
        n=n,
        baseline_value=value_a,
        candidate_value=value_b,
        baseline_points=value_a * scale,
        resampled=drops,
    )


def paired_suite_drop(
    metric: str,
    baseline_logs: list[list[SampleRow]],
    candidate_logs: list[list[SampleRow]],
    *,
    resamples_and_seed: tuple[int, int],
) -> PairedDrop:
    """The paired drop on a suite's size-weighted average and its 95% percentile interval,
    from a bootstrap that resamples questions within each task."""
    pairs = [
        pair_rows(base, cand, metric)
        for base, cand in zip(baseline_logs, candidate_logs, strict=True)
    ]
    resamples, seed = resamples_and_seed
    value_a, value_b, resampled = paired_suite_difference(
        metric, [a for a, _ in pairs], [b for _, b in pairs], resamples=resamples, seed=seed
    )
    n = sum(len(a) for a, _ in pairs)
    method = f"paired bootstrap within tasks, {resamples} resamples"
    return bootstrap_drop(metric_of(metric), value_a, value_b, resampled, n, method)


def proportion_drop(
    definition: Metric,
    base: list[SampleRow],
    cand: list[SampleRow],
    drop: float,
    drops: np.ndarray,
    value_a: float,
    value_b: float,
) -> PairedDrop:
    a, b = (values > 0.5 for values in definition.scored(base, cand))
    if not definition.higher_is_better:
        a, b = ~a, ~b  # "right" is the side that is better
    lost, won, n = int((a & ~b).sum()), int((b & ~a).sum()), len(a)
    low, high = tango_paired_difference_ci(lost, won, n, CONFIDENCE)
    # one pseudo-flip in n + 2 questions: no flip seen in a small run is no proof of none
    flip_rate = (lost + won + 1) / (n + 2)
    spread = math.sqrt(max(flip_rate - ((lost - won) / n) ** 2, flip_rate / (n + 2)))
    return PairedDrop(
        drop=drop,
        interval=(low * 100, high * 100),
        method="Tango score interval",
        spread=spread * 100,
        n=n,
        baseline_value=value_a,
        candidate_value=value_b,
        baseline_points=value_a * 100,
        resampled=drops,
    )
