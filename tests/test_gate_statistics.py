"""The gate's statistics against independent references: Tango's paired score interval
against the score statistic maximised numerically with scipy and a published value; the
paired bootstrap against scipy.stats.bootstrap; the planning formula against seeded
simulations of the decision it plans for."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize, stats

from medharness.core.records import GenerationRow, MetricValue, TaskResult
from medharness.reports.gate import RuleSpec
from medharness.reports.gate_plan import per_question_spread, plan_rule
from medharness.reports.gate_statistics import paired_drop
from medharness.tasks.metrics.stats import tango_paired_difference_ci

Z = stats.norm.ppf(0.975)


def reference_score(delta: float, lost: int, won: int, n: int) -> float:
    """Tango's score statistic at ``delta`` with the restricted maximum-likelihood cell
    probabilities found by scipy's optimiser, not by the closed form."""
    if abs(delta) >= 1:
        return -math.copysign(math.inf, delta) if lost - won != n * delta else 0.0

    def minus_loglik(p_won: float) -> float:
        p_lost = p_won + delta
        terms = [(lost, p_lost), (won, p_won), (n - lost - won, 1 - p_lost - p_won)]
        return -sum(k * math.log(max(p, 1e-300)) for k, p in terms if k)

    low, high = max(0.0, -delta), (1 - delta) / 2
    p_won = optimize.minimize_scalar(
        minus_loglik, bounds=(low, high), method="bounded", options={"xatol": 1e-13}
    ).x
    variance = n * (2 * p_won + delta - delta**2)  # n (p_lost + p_won - delta^2)
    return (lost - won - n * delta) / math.sqrt(max(variance, 1e-300))


def reference_tango(lost: int, won: int, n: int) -> tuple[float, float]:
    """The differences the score test does not reject at 5%: where |Z| <= z, bounds found
    by a scan and scipy's brentq on the numerically maximised statistic."""
    grid = np.linspace(-1, 1, 401)[1:-1]
    inside = [d for d in grid if abs(reference_score(d, lost, won, n)) <= Z]
    first, last = min(inside), max(inside)

    def bound(edge: float, step: float, sign: float) -> float:
        outer = edge + step
        if abs(outer) >= 1:
            outer = math.copysign(1 - 1e-12, outer)
            if abs(reference_score(outer, lost, won, n)) <= Z:
                return math.copysign(1.0, outer)
        return optimize.brentq(
            lambda d: reference_score(d, lost, won, n) - sign * Z, edge, outer, xtol=1e-10
        )

    return bound(first, -0.005, 1), bound(last, 0.005, -1)


CASES = [
    (0, 0, 40),  # all agree (every pair concordant; p = 0 and p = 1 alike)
    (0, 0, 1),  # one question
    (1, 0, 1),
    (0, 1, 1),
    (40, 0, 40),  # all disagree, every one a loss
    (20, 20, 40),  # all disagree, half each way
    (5, 2, 40),
    (3, 3, 50),
    (0, 7, 12),
    (7, 1, 21),
]


@pytest.mark.parametrize(("lost", "won", "n"), CASES)
def test_tango_interval_matches_the_numerically_maximised_score_test(
    lost: int, won: int, n: int
) -> None:
    assert tango_paired_difference_ci(lost, won, n) == pytest.approx(
        reference_tango(lost, won, n), abs=2e-6
    )


def test_tango_interval_on_random_tables_and_a_published_example() -> None:
    rng = np.random.default_rng(7)
    for _ in range(12):
        n = int(rng.integers(2, 300))
        lost = int(rng.integers(0, n + 1))
        won = int(rng.integers(0, n - lost + 1))
        assert tango_paired_difference_ci(lost, won, n) == pytest.approx(
            reference_tango(lost, won, n), abs=2e-6
        ), (lost, won, n)
    # Fagerland, Lydersen & Laake (2014), Stat Med 33:2850, airway hyper-responsiveness
    # before/after (n = 21, discordant 1 and 7): Tango asymptotic score -0.517 to -0.026
    low, high = tango_paired_difference_ci(1, 7, 21)
    assert (round(low, 3), round(high, 3)) == (-0.517, -0.026)


def rouge_rows(values: np.ndarray) -> list[GenerationRow]:
    return [
        GenerationRow(doc_id=str(i), target="", prediction="", metrics={"rouge1": float(v)})
        for i, v in enumerate(values)
    ]


def test_paired_bootstrap_interval_agrees_with_scipy_bootstrap() -> None:
    rng = np.random.default_rng(3)
    base = rng.beta(4, 6, size=300)
    cand = np.clip(base - 0.02 + rng.normal(0, 0.1, size=300), 0, 1)
    pair = paired_drop("rouge1", rouge_rows(base), rouge_rows(cand), resamples_and_seed=(20000, 5))
    reference = stats.bootstrap(
        (base, cand),
        lambda a, b: np.mean(a - b),
        paired=True,
        vectorized=False,
        n_resamples=20000,
        method="percentile",
        random_state=np.random.default_rng(11),
    ).confidence_interval
    assert pair.drop == pytest.approx(100 * float(np.mean(base - cand)))
    # two independent Monte Carlo runs: the bounds agree to a small share of the width
    width = reference.high - reference.low
    assert pair.interval[0] == pytest.approx(100 * reference.low, abs=100 * 0.03 * width)
    assert pair.interval[1] == pytest.approx(100 * reference.high, abs=100 * 0.03 * width)


def plan_for(metric: str, value: float, n: int, margin: float, spread: float) -> int:
    result = TaskResult(n=n, metrics={metric: MetricValue(value=value, ci95=(0.0, 1.0))})
    planned = plan_rule(RuleSpec("t", metric, "max_drop", margin, "critical"), result, spread)
    assert planned.questions is not None
    return planned.questions


def test_planned_accuracy_run_passes_the_margin_with_80_percent_power() -> None:
    """A candidate exactly as accurate as the baseline, its answers independent of the
    baseline's: at the planned size, about 80% of its runs pass a 3-point margin."""
    accuracy, baseline_n = 0.6, 1000
    result = TaskResult(n=baseline_n, metrics={"acc": MetricValue(value=accuracy, ci95=(0, 1))})
    n = plan_for("acc", accuracy, baseline_n, 3.0, per_question_spread("acc", result, None))
    rng = np.random.default_rng(2024)
    simulations = 2000
    concordant = 1 - 2 * accuracy * (1 - accuracy)
    cells = rng.multinomial(n, [accuracy * (1 - accuracy)] * 2 + [concordant], size=simulations)
    passed = [tango_paired_difference_ci(int(c[0]), int(c[1]), n)[1] < 0.03 for c in cells]
    assert 3000 < n < 6000
    assert abs(np.mean(passed) - 0.80) <= 0.03, (n, np.mean(passed))


def test_planned_rouge_run_passes_the_margin_with_80_percent_power() -> None:
    """The same for a continuous score judged by the paired percentile bootstrap."""
    rng = np.random.default_rng(99)
    baseline_scores = rng.beta(3, 5, size=2000)
    spread = float(np.std(baseline_scores))
    n = plan_for("rouge1", float(baseline_scores.mean()), 2000, 4.0, spread)
    simulations, passed = 1000, 0
    for _ in range(simulations):
        base = rng.beta(3, 5, size=n)
        cand = rng.beta(3, 5, size=n)  # as good on average, independent per question
        drops = (base - cand)[rng.integers(0, n, size=(1000, n))].mean(axis=1) * 100
        passed += float(np.quantile(drops, 0.975)) < 4.0
    assert 100 < n < 1000
    assert abs(passed / simulations - 0.80) <= 0.03, (n, passed / simulations)


def test_a_higher_invalid_answer_rate_is_a_drop() -> None:
    """Lower is better for the invalid-answer rate: a candidate that names no option more
    often has a positive drop, and its interval counts those questions as lost."""

    def rows(invalid: list[int]) -> list[GenerationRow]:
        return [
            GenerationRow(
                doc_id=str(i), target="", prediction="", metrics={"invalid_answer": float(v)}
            )
            for i, v in enumerate(invalid)
        ]

    base = [0] * 30 + [1] * 2 + [0] * 8
    cand = [1] * 6 + [0] * 24 + [1] * 2 + [0] * 8  # 6 more invalid, none fewer
    pair = paired_drop("invalid_answer", rows(base), rows(cand), resamples_and_seed=(200, 1))
    assert pair.drop == pytest.approx(100 * 6 / 40)
    low, high = reference_tango(6, 0, 40)
    assert pair.interval == pytest.approx((100 * low, 100 * high), abs=1e-3)
