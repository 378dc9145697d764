"""Confidence intervals. Seeded, vectorised, and each one named in the results it produces."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.stats import binomtest

DEFAULT_RESAMPLES = 1000
CONFIDENCE = 0.95


def bootstrap_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """``resamples`` rows of ``n`` indices drawn with replacement (percentile bootstrap)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, n, size=(resamples, n))


def _percentiles(values: np.ndarray) -> tuple[float, float]:
    alpha = (1 - CONFIDENCE) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return float(low), float(high)


def bootstrap_mean_ci(values: np.ndarray, resamples: int, seed: int) -> tuple[float, float]:
    """95% percentile-bootstrap interval of a mean of per-sample values."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return float(values.mean()), float(values.mean())
    means = values[bootstrap_indices(len(values), resamples, seed)].mean(axis=1)
    return _percentiles(means)


def bootstrap_corpus_ci(
    statistics: np.ndarray,
    score: Callable[[np.ndarray], float],
    resamples: int,
    seed: int,
) -> tuple[float, float]:
    """95% bootstrap interval of a corpus metric computed from summed per-sample statistics."""
    n = len(statistics)
    if n < 2:
        value = score(statistics.sum(axis=0))
        return value, value
    totals = statistics[bootstrap_indices(n, resamples, seed)].sum(axis=1)
    return _percentiles(np.array([score(row) for row in totals]))


def exact_binomial_ci(successes: int, n: int) -> tuple[float, float]:
    """Clopper-Pearson exact 95% interval for a proportion (accuracy)."""
    if n == 0:
        return float("nan"), float("nan")
    interval = binomtest(successes, n).proportion_ci(confidence_level=CONFIDENCE, method="exact")
    return float(interval.low), float(interval.high)
