"""Confidence intervals. Seeded, vectorised, and each one named in the results it produces."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Literal

import numpy as np

CONFIDENCE = 0.95


@lru_cache(maxsize=8)
def bootstrap_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """``resamples`` rows of ``n`` indices drawn with replacement (percentile bootstrap).

    Cached and read-only: every metric of a task, and both sides of a paired comparison,
    reuse the same draws."""
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, n, size=(resamples, n))
    indices.setflags(write=False)
    return indices


def resample_counts(n: int, resamples: int, seed: int) -> np.ndarray:
    """How often each sample appears in each resample of :func:`bootstrap_indices`, so a sum
    over a resample is one matrix product: ``counts @ per_sample_values``."""
    indices = bootstrap_indices(n, resamples, seed)
    flat = (np.arange(resamples)[:, None] * n + indices).ravel()
    return np.bincount(flat, minlength=resamples * n).reshape(resamples, n).astype(np.float64)


def percentile_interval(values: np.ndarray) -> tuple[float, float]:
    """The central 95% of bootstrap replicates: the percentile interval."""
    alpha = (1 - CONFIDENCE) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return float(low), float(high)


def bootstrap_mean_ci(values: np.ndarray, resamples: int, seed: int) -> tuple[float, float]:
    """95% percentile-bootstrap interval of a mean of per-sample values."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return float(values.mean()), float(values.mean())
    means = values[bootstrap_indices(len(values), resamples, seed)].mean(axis=1)
    return percentile_interval(means)


def bootstrap_clipped_mean_ci(values: np.ndarray, resamples: int, seed: int) -> tuple[float, float]:
    """95% percentile-bootstrap interval of a mean clipped to [0, 1], each resample's mean
    clipped as the value is (HealthBench's ``_compute_clipped_stats``)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        value = float(np.clip(values.mean(), 0, 1))
        return value, value
    means = values[bootstrap_indices(len(values), resamples, seed)].mean(axis=1)
    return percentile_interval(np.clip(means, 0, 1))


def bootstrap_corpus_ci(
    statistics: np.ndarray,
    score_rows: Callable[[np.ndarray], np.ndarray],
    resamples: int,
    seed: int,
) -> tuple[float, float]:
    """95% bootstrap interval of a corpus metric computed from summed per-sample statistics;
    ``score_rows`` scores every row of a matrix of summed statistics at once."""
    n = len(statistics)
    if n < 2:
        value = float(score_rows(statistics.sum(axis=0, keepdims=True))[0])
        return value, value
    totals = resample_counts(n, resamples, seed) @ statistics.astype(np.float64)
    return percentile_interval(score_rows(totals))


def exact_binomial_ci(successes: int, n: int) -> tuple[float, float]:
    """Clopper-Pearson exact 95% interval for a proportion (accuracy): the beta quantiles
    scipy's ``binomtest(...).proportion_ci(method="exact")`` takes, without importing
    scipy.stats (a second and a half of start-up)."""
    from scipy.special import betainccinv, betaincinv

    if n == 0:
        return float("nan"), float("nan")
    tail = (1 - CONFIDENCE) / 2
    low = 0.0 if successes == 0 else betaincinv(successes, n - successes + 1, tail)
    high = 1.0 if successes == n else betainccinv(successes + 1, n - successes, tail)
    return float(low), float(high)


def two_sided_bootstrap_p(differences: np.ndarray) -> float:
    """Twice the smaller share of resampled differences on either side of zero, with the
    usual +1 correction so that p is never 0."""
    below = int((differences <= 0).sum())
    above = int((differences >= 0).sum())
    return min(1.0, 2 * (min(below, above) + 1) / (len(differences) + 1))


def mcnemar_exact(baseline_correct: Sequence[bool], candidate_correct: Sequence[bool]) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs: twice the binomial(n, 1/2)
    tail of the smaller count, capped at 1 (statsmodels' ``mcnemar(exact=True)``)."""
    from scipy.stats import binom

    pairs = list(zip(map(bool, baseline_correct), map(bool, candidate_correct), strict=True))
    lost = sum(1 for b, c in pairs if b and not c)
    won = sum(1 for b, c in pairs if c and not b)
    if lost + won == 0:
        return 1.0
    return min(1.0, 2 * float(binom.cdf(min(lost, won), lost + won, 0.5)))


Correction = Literal["holm", "bh", "none"]


def adjust_p_values(p_values: Sequence[float], method: Correction) -> list[float]:
    """p-values adjusted for the number of comparisons made together, in the input order:
    Holm's step-down (family-wise error) or Benjamini-Hochberg's step-up (false discovery
    rate), as statsmodels' ``multipletests`` computes them; ``none`` leaves them as they are."""
    values = [float(p) for p in p_values]
    m = len(values)
    if method == "none" or m == 0:
        return values
    order = sorted(range(m), key=values.__getitem__)
    adjusted = [0.0] * m
    if method == "holm":
        running = 0.0
        for rank, index in enumerate(order):
            running = max(running, min(1.0, (m - rank) * values[index]))
            adjusted[index] = running
    else:
        running = 1.0
        for rank in range(m - 1, -1, -1):
            index = order[rank]
            running = min(running, m / (rank + 1) * values[index])
            adjusted[index] = running
    return adjusted


def normal_quantile(probability: float) -> float:
    """The standard normal quantile (scipy's ``norm.ppf``, without importing scipy.stats)."""
    from scipy.special import ndtri

    return float(ndtri(probability))


def tango_paired_difference_ci(
    lost: int, won: int, n: int, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """Tango's (1998) score interval for the difference of two paired proportions,
    baseline minus candidate, from the discordant pairs: ``lost`` questions only the baseline
    got right, ``won`` questions only the candidate did, of ``n``.

    A score interval: the set of differences the score test does not reject, so it stays
    inside [-1, 1], and it keeps a width when no question flips (all agree) or when every
    question does, where a Wald interval collapses to a point."""
    from scipy.optimize import brentq

    if n < 1:
        return float("nan"), float("nan")
    z = normal_quantile(1 - (1 - confidence) / 2)
    observed = (lost - won) / n

    def excess(delta: float, sign: float) -> float:
        """Numerator of the score statistic plus ``sign`` z times its standard error: zero at
        the bounds, continuous (no division) even where the standard error is zero."""
        a = 2 * n
        b = -lost - won + (2 * n - lost + won) * delta
        c = -won * delta * (1 - delta)
        p_won = max(0.0, (-b + math.sqrt(max(0.0, b * b - 4 * a * c))) / (2 * a))
        variance = max(0.0, n * (2 * p_won + delta * (1 - delta)))
        return lost - won - n * delta + sign * z * math.sqrt(variance)

    step = 1e-12  # the statistic is 0/0 at the estimate itself when no question flips
    low = (
        -1.0
        if observed <= -1 or excess(-1.0, -1) <= 0 or excess(observed - step, -1) >= 0
        else brentq(excess, -1.0, observed - step, args=(-1,), xtol=1e-12)
    )
    high = (
        1.0
        if observed >= 1 or excess(1.0, 1) >= 0 or excess(observed + step, 1) <= 0
        else brentq(excess, observed + step, 1.0, args=(1,), xtol=1e-12)
    )
    return float(max(-1.0, low)), float(min(1.0, high))


def weighted_by_size(values: Sequence[float], sizes: Sequence[int]) -> float:
    """A group's value from its members': each weighted by its sample count (lm-eval's
    ``aggregate_subtask_metrics`` with ``weight_by_size``)."""
    return sum(value * size for value, size in zip(values, sizes, strict=True)) / sum(sizes)


def stratified_resampled_means(
    groups: Sequence[np.ndarray], resamples: int, seed: int
) -> np.ndarray:
    """The mean over every group's values pooled, on each of ``resamples`` bootstrap
    resamples that redraw each group within itself at its own size: the replicates of a
    size-weighted average of group means. The draws depend only on the group sizes and the
    seed, so two models' values (or their differences) resample the same questions."""
    rng = np.random.default_rng(seed)
    totals = np.zeros(resamples)
    for values in groups:
        values = np.asarray(values, dtype=np.float64)
        totals += values[rng.integers(0, len(values), size=(resamples, len(values)))].sum(axis=1)
    return totals / sum(len(values) for values in groups)
