"""A suite's value per metric: its tasks' values weighted by their sizes, as lm-eval's group
aggregation computes them, with a 95% interval and a paired test against the baseline from
bootstraps that resample questions within each task (a task's share of the suite fixed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from medharness.core.records import (
    MetricValue,
    SampleRow,
    SuiteComparison,
    SuiteResult,
    TaskResult,
)
from medharness.tasks.metrics import metric
from medharness.tasks.metrics.stats import (
    percentile_interval,
    stratified_resampled_means,
    two_sided_bootstrap_p,
    weighted_by_size,
)

AVERAGED = ("proportion", "mean")  # summaries whose size-weighted average is the pooled one


def suite_metric_names(results: Sequence[TaskResult]) -> list[str]:
    """Metrics every task of the suite has, of every answer, summarised as a mean."""
    first, *rest = results
    return [
        name
        for name in first.metrics
        if all(name in result.metrics for result in rest)
        and metric(name).summary in AVERAGED
        and not metric(name).optional
    ]


def suite_test_name(resamples: int) -> str:
    return f"paired bootstrap within tasks ({resamples} resamples)"


def suite_result(
    tasks: Sequence[str],
    results: Sequence[TaskResult],
    rows: Sequence[Sequence[SampleRow]],
    *,
    resamples: int,
    seed: int,
) -> SuiteResult:
    """One model on a suite, from its task results and the sample logs behind them."""
    values = {}
    for name in suite_metric_names(results):
        definition = metric(name)
        value = weighted_by_size([r.metrics[name].value for r in results], [r.n for r in results])
        groups = [definition.per_sample(task_rows) for task_rows in rows]
        replicates = stratified_resampled_means(groups, resamples, seed)
        values[name] = MetricValue(value=value, ci95=percentile_interval(replicates))
    return SuiteResult(
        tasks=list(tasks),
        n=sum(result.n for result in results),
        metrics=values,
        settings={
            "average": "tasks weighted by their sizes (lm-eval group, weight_by_size)",
            "interval": "percentile bootstrap resampling questions within each task",
            "bootstrap": {"resamples": resamples, "seed": seed},
        },
    )


def paired_suite_difference(
    name: str,
    base: Sequence[Sequence[SampleRow]],
    cand: Sequence[Sequence[SampleRow]],
    *,
    resamples: int,
    seed: int,
) -> tuple[float, float, np.ndarray]:
    """Baseline value, candidate value, and candidate minus baseline on each paired resample
    within tasks; each task's two logs aligned question by question."""
    definition = metric(name)
    a = [definition.per_sample(rows) for rows in base]
    b = [definition.per_sample(rows) for rows in cand]
    sizes = [len(values) for values in a]
    value_a = weighted_by_size([float(values.mean()) for values in a], sizes)
    value_b = weighted_by_size([float(values.mean()) for values in b], sizes)
    differences = [y - x for x, y in zip(a, b, strict=True)]
    return value_a, value_b, stratified_resampled_means(differences, resamples, seed)


def suite_comparison(
    baseline: str,
    name: str,
    base: Sequence[Sequence[SampleRow]],
    cand: Sequence[Sequence[SampleRow]],
    *,
    resamples: int,
    seed: int,
) -> SuiteComparison:
    value_a, value_b, resampled = paired_suite_difference(
        name, base, cand, resamples=resamples, seed=seed
    )
    return SuiteComparison(
        baseline=baseline,
        difference=value_b - value_a,
        ci95=percentile_interval(resampled),
        p_value=two_sided_bootstrap_p(resampled),
        test=suite_test_name(resamples),
    )


def suite_results(
    suites: Mapping[str, Sequence[str]],
    results: Mapping[str, Mapping[str, TaskResult]],
    rows: Mapping[tuple[str, str], Sequence[SampleRow]],
    *,
    resamples: int,
    seed: int,
) -> dict[str, dict[str, SuiteResult]]:
    """model -> suite -> result for every model of a run (the first the baseline), each
    other model compared with the baseline on the same questions. ``rows`` holds each
    (model, task)'s sample log, in the same sample order for every model."""
    models = list(results)
    found: dict[str, dict[str, SuiteResult]] = {model: {} for model in models}
    for suite, tasks in suites.items():
        base_rows = [rows[models[0], task] for task in tasks]
        for model in models:
            logs = [rows[model, task] for task in tasks]
            result = suite_result(
                tasks, [results[model][task] for task in tasks], logs,
                resamples=resamples, seed=seed,
            )  # fmt: skip
            if model != models[0]:
                compared = {
                    name: suite_comparison(
                        models[0], name, base_rows, logs, resamples=resamples, seed=seed
                    )
                    for name in result.metrics
                }
                result = result.model_copy(update={"vs_baseline": compared})
            found[model][suite] = result
    return found
