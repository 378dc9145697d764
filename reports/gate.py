"""The release gate: a policy of floors and regression limits checked against a finished run.

Reads run directories only (no model is called, so re-gating costs seconds). Floors compare
a metric's value with a number. Regression limits compare the candidate with a baseline
model on the same questions: a rule fails when the candidate is significantly worse by more
than the allowed drop, i.e. when the one-sided upper confidence bound (level ``alpha``,
paired bootstrap) of candidate minus baseline is below minus the allowed drop. Too few
samples fail the gate instead of passing it quietly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
from pydantic import ConfigDict, Field, field_validator

from medharness.core.errors import UserError
from medharness.core.records import SampleRow, SuiteResult, TaskResult
from medharness.core.validation import Strict, load_yaml_file, validate_file_data
from medharness.reports.comparability import differences
from medharness.reports.compare import pair_rows
from medharness.reports.runs import RunData
from medharness.tasks import TASKS
from medharness.tasks.metrics import is_metric, task_may_have
from medharness.tasks.metrics import metric as metric_of
from medharness.tasks.metrics.suites import paired_suite_difference


def split_rule_key(key: str) -> tuple[str, str]:
    """``task.metric`` -> (task, metric), refusing unknown tasks and metrics."""
    task, _, metric = key.partition(".")
    if task not in TASKS:  # a task of the user's own: checked against the run when gated
        if not is_metric(metric):
            raise ValueError(f"unknown metric {metric!r} in {key!r}")
        return task, metric
    if not task_may_have(TASKS[task], metric):
        known = ", ".join(TASKS[task].metric_names)
        judged = ", judge_<criterion>" if TASKS[task].kind == "generate" else ""
        raise ValueError(f"unknown metric {metric!r} in {key!r}; {task} has: {known}{judged}")
    return task, metric


class Policy(Strict):
    # numbers must be numbers: a quoted "0.05" is refused, not converted
    model_config = ConfigDict(**Strict.model_config, strict=True)

    candidate: str | None = None  # model of the run to gate (default: its last model)
    baseline: str | None = None  # model to compare with (default: see resolve_models)
    alpha: float = Field(0.05, gt=0, lt=0.5)  # one-sided level of the regression tests
    min_samples: int = Field(100, ge=1)  # every gated task needs at least this many samples
    required_tasks: list[str] = Field(default_factory=list)
    # task.metric: lowest acceptable value, in the metric's own units (accuracy 0-1, BLEU 0-100)
    floors: dict[str, float] = Field(default_factory=dict)
    # task.metric: largest allowed drop, in points (0-100 for every metric)
    regressions: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)

    @field_validator("floors", "regressions")
    @classmethod
    def known_keys(cls, rules: dict[str, float]) -> dict[str, float]:
        for key in rules:
            split_rule_key(key)
        return rules

    @field_validator("floors")
    @classmethod
    def floors_on_the_metric_scale(cls, floors: dict[str, float]) -> dict[str, float]:
        for key, value in floors.items():
            metric = metric_of(split_rule_key(key)[1])
            top = 100.0 / metric.points_factor
            if not 0 <= value <= top:
                hint = f" (did you mean {value / 100:g}?)" if top == 1 and 1 < value <= 100 else ""
                raise ValueError(
                    f"{key}: floor {value:g} is outside 0-{top:g}, {metric.display_name}'s own "
                    f"scale{hint}"
                )
        return floors

    def gated_tasks(self) -> list[str]:
        tasks = list(self.required_tasks)
        for key in [*self.floors, *self.regressions]:
            task = split_rule_key(key)[0]
            if task not in tasks:
                tasks.append(task)
        return tasks


def load_policy(path: Path) -> Policy:
    data = load_yaml_file(path, "policy")
    return validate_file_data(Policy, data, str(path), "policy settings")


@dataclass(frozen=True)
class RuleResult:
    name: str  # e.g. "medqa_4opt.acc >= 0.55"
    task: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class GateResult:
    candidate: str
    baseline: str | None
    rules: list[RuleResult]

    @property
    def passed(self) -> bool:
        return all(rule.passed for rule in self.rules)


def resolve_models(policy: Policy, run: RunData, baseline_run: RunData) -> tuple[str, str | None]:
    """Candidate: the policy's, else the run's last model. Baseline: the policy's; else, with
    a separate baseline run, its model of the candidate's name or its first model; else the
    run's own baseline (first model) unless that is the candidate."""
    candidate = policy.candidate or run.models[-1]
    if candidate not in run.models:
        raise UserError(f"{run.path}: no model {candidate!r}; models: {', '.join(run.models)}")
    if policy.baseline:
        if policy.baseline not in baseline_run.models:
            raise UserError(
                f"{baseline_run.path}: no model {policy.baseline!r}; "
                f"models: {', '.join(baseline_run.models)}"
            )
        return candidate, policy.baseline
    if baseline_run is not run:
        return candidate, candidate if candidate in baseline_run.models else baseline_run.models[0]
    first = run.models[0]
    return candidate, first if first != candidate else None


def check_comparable(run: RunData, baseline_run: RunData, tasks: list[str]) -> None:
    """Refuse to compare results that differ in what makes them comparable."""
    problems = []
    for task in tasks:
        differing = differences(run, baseline_run, task)
        if differing:
            problems.append(f"{task} ({', '.join(differing)})")
    if problems:
        raise UserError(
            f"{run.path} and baseline {baseline_run.path} are not comparable: they differ in "
            + "; ".join(problems)
        )


def evaluate_gate(policy: Policy, run_dir: Path, baseline_dir: Path | None) -> GateResult:
    run = RunData.open(run_dir)
    baseline_run = RunData.open(baseline_dir) if baseline_dir else run
    candidate, baseline = resolve_models(policy, run, baseline_run)
    if policy.regressions and baseline is None:
        raise UserError(
            "the policy has regression limits but there is no baseline model: pass "
            "--baseline RUN_DIR or run a baseline model first in the same config"
        )
    suites = run.results.suites.get(candidate, {})
    unknown = [
        t
        for t in policy.gated_tasks()
        if t not in TASKS and t not in suites and run.task(t) is None
    ]
    if unknown:
        raise UserError(
            f"unknown task {unknown[0]!r} in the policy; known tasks: {', '.join(TASKS)} "
            "and the run's own tasks and suites"
        )
    gated = [
        t
        for name in policy.gated_tasks()
        for t in (suites[name].tasks if name in suites else [name])
    ]
    check_comparable(run, baseline_run, gated)
    resamples, seed = run.manifest.bootstrap_settings()
    # a suite's rules read its average (the suite's n: all its questions)
    results: dict[str, TaskResult | SuiteResult] = {**suites, **run.results.results[candidate]}
    rules: list[RuleResult] = []

    for task in policy.gated_tasks():
        if task not in results:
            rules.append(RuleResult(f"{task} is evaluated", task, False, "task not in the run"))
            continue
        n = results[task].n
        rules.append(
            RuleResult(
                f"{task} has at least {policy.min_samples} samples",
                task,
                n >= policy.min_samples,
                f"n = {n}",
            )
        )
    for key, floor in policy.floors.items():
        task, metric = split_rule_key(key)
        if task not in results:
            continue
        if metric not in results[task].metrics:
            rules.append(RuleResult(f"{key} >= {floor:g}", task, False, "not in the run's results"))
            continue
        value = results[task].metrics[metric].value
        rules.append(
            RuleResult(
                f"{key} >= {floor:g}",
                task,
                value >= floor,
                f"measured {value:.4f}",
            )
        )
    for key, drop in policy.regressions.items():
        task, metric = split_rule_key(key)
        if task not in results or baseline is None:
            continue
        if task in suites:
            rules.append(
                suite_regression_rule(
                    key, drop, suites[task].tasks, (baseline_run, baseline), (run, candidate),
                    alpha=policy.alpha, resamples=resamples, seed=seed,
                )
            )  # fmt: skip
            continue
        base_result = baseline_run.results.result(baseline, task)
        if base_result is None or metric not in base_result.metrics:
            rules.append(
                RuleResult(f"{key} drop <= {drop:g} points", task, False, "not in the baseline")
            )
            continue
        if metric not in results[task].metrics:
            rules.append(
                RuleResult(f"{key} drop <= {drop:g} points", task, False, "not in the run")
            )
            continue
        rules.append(
            regression_rule(
                key,
                drop,
                baseline_run.samples(baseline, task),
                run.samples(candidate, task),
                alpha=policy.alpha,
                resamples=resamples,
                seed=seed,
            )
        )
    return GateResult(candidate, baseline, rules)


def regression_rule(
    key: str,
    drop: float,
    baseline_rows: list[SampleRow],
    candidate_rows: list[SampleRow],
    *,
    alpha: float,
    resamples: int,
    seed: int,
) -> RuleResult:
    """Fail only when the candidate is significantly worse by more than ``drop`` points."""
    metric = split_rule_key(key)[1]
    base, cand = pair_rows(baseline_rows, candidate_rows, key)
    definition = metric_of(metric)
    value_a, value_b, resampled = definition.paired_differences(
        base, cand, resamples=resamples, seed=seed
    )
    return drop_rule(key, drop, value_a, value_b, resampled, alpha)


def suite_regression_rule(
    key: str,
    drop: float,
    tasks: list[str],
    baseline: tuple[RunData, str],
    candidate: tuple[RunData, str],
    *,
    alpha: float,
    resamples: int,
    seed: int,
) -> RuleResult:
    """A regression limit on a suite's average: the paired bootstrap within its tasks."""
    metric = split_rule_key(key)[1]
    pairs = [
        pair_rows(baseline[0].samples(baseline[1], t), candidate[0].samples(candidate[1], t), key)
        for t in tasks
    ]
    value_a, value_b, resampled = paired_suite_difference(
        metric, [a for a, _ in pairs], [b for _, b in pairs], resamples=resamples, seed=seed
    )
    return drop_rule(key, drop, value_a, value_b, resampled, alpha)


def drop_rule(
    key: str, drop: float, value_a: float, value_b: float, resampled: np.ndarray, alpha: float
) -> RuleResult:
    """Pass unless the one-sided upper bound of candidate minus baseline is below -drop."""
    task, metric = split_rule_key(key)
    scale = metric_of(metric).points_factor  # drops are in points: 0-100 for every metric
    difference = (value_b - value_a) * scale
    upper = float(np.quantile(resampled, 1 - alpha)) * scale
    passed = upper >= -drop
    detail = (
        f"candidate - baseline = {difference:+.2f} points ({value_b:.4f} vs {value_a:.4f}); "
        f"one-sided {1 - alpha:.0%} upper bound {upper:+.2f} "
        + (">=" if passed else "<")
        + f" -{drop:g} allowed"
    )
    return RuleResult(f"{key} drop <= {drop:g} points", task, passed, detail)
