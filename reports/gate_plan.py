"""Sizing a candidate run before it is made: for each rule of a gate policy, how many
questions let a candidate that is truly as good as the baseline pass with 80% power.

The spread is the baseline's own, per question. A margin judges a paired difference, whose
spread is taken as that of two independent answers (sqrt(2) times one answer's): a
candidate that keeps most of the baseline's answers needs fewer questions, so the plan errs
towards runs large enough.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from medharness.core.errors import UserError
from medharness.core.records import TaskResult
from medharness.reports.gate import Policy, RuleSpec
from medharness.reports.gate_statistics import CONFIDENCE, POWER, questions_to_decide, z_of
from medharness.reports.runs import RunData
from medharness.tasks.metrics import metric as metric_of


@dataclass(frozen=True)
class RulePlan:
    rule: RuleSpec
    questions: int | None  # None: no run size makes an equal candidate pass
    reason: str  # the numbers behind it, or why there is none


def per_question_spread(
    metric: str, result: TaskResult, rows_values: np.ndarray | None, repeated: bool = False
) -> float:
    """Standard deviation of one question's score in the metric's own units: of a proportion
    with one pseudo-success and one pseudo-failure (so 0% and 100% still leave some spread),
    of per-question scores (means over sampled answers too), or for corpus BLEU from its
    bootstrap interval's width."""
    definition = metric_of(metric)
    if repeated and definition.averaged_over_repeats and definition.summary == "proportion":
        definition = replace(definition, summary="mean")
    value = result.metrics[metric]
    n = value.n if value.n is not None else result.n
    if definition.summary == "proportion":
        rate = (value.value * n + 1) / (n + 2)
        return math.sqrt(rate * (1 - rate))
    if definition.summary == "mean" and rows_values is not None and len(rows_values) > 1:
        return float(np.std(rows_values))
    low, high = value.ci95
    return (high - low) / (2 * z_of(CONFIDENCE)) * math.sqrt(n)


def plan_rule(spec: RuleSpec, result: TaskResult, spread: float) -> RulePlan:
    """Questions for one rule, at the baseline's value and spread."""
    if spec.kind in ("min_samples", "evaluated"):
        return RulePlan(spec, int(spec.threshold), "the policy's own minimum")
    assert spec.metric is not None
    definition = metric_of(spec.metric)
    value = result.metrics[spec.metric].value
    points = definition.points_factor
    said = f"baseline {value:.4f}, per-question spread {spread:.3f}"
    if spec.kind in ("point_floor", "max_significant_drop"):
        return RulePlan(spec, None, f"{said}; this rule judges a point or significance, not an "
                        "interval against a margin: no size is needed for it to pass, and none "
                        "makes it reliable (use floor: or max_drop:)")  # fmt: skip
    if spec.kind == "floor":
        distance = value - spec.threshold
        if distance <= 0:
            return RulePlan(spec, None, f"{said}; the baseline itself does not clear the floor")
        return RulePlan(spec, questions_to_decide(spread, distance), said)
    margin = spec.threshold
    if spec.kind == "max_relative_drop":
        margin = spec.threshold / 100 * value * points
    paired = math.sqrt(2) * spread * points
    return RulePlan(
        spec,
        questions_to_decide(paired, margin),
        f"{said}; paired spread {paired:.1f} points, margin {margin:.2f} points",
    )


def plan_gate(policy: Policy, baseline_dir: Path) -> tuple[str, list[RulePlan]]:
    """The baseline model's name and each rule's plan."""
    run = RunData.open(baseline_dir)
    model = policy.baseline or run.models[0]
    if model not in run.models:
        raise UserError(f"{run.path}: no model {model!r}; models: {', '.join(run.models)}")
    plans = []
    for spec in policy.rules():
        result = run.results.result(model, spec.task)
        if result is None or (spec.metric is not None and spec.metric not in result.metrics):
            what = spec.task if result is None else spec.key
            plans.append(RulePlan(spec, None, f"{what} is not in the baseline run"))
            continue
        values = None
        repeated = "repeats" in result.settings
        if spec.metric is not None and (metric_of(spec.metric).summary == "mean" or repeated):
            values = metric_of(spec.metric).per_sample(run.samples(model, spec.task))
            values = values[~np.isnan(values)]
        spread = per_question_spread(spec.metric, result, values, repeated) if spec.metric else 0.0
        plans.append(plan_rule(spec, result, spread))
    return model, plans


def render_plan(model: str, baseline_dir: Path, plans: list[RulePlan]) -> str:
    lines = [
        f"medharness plan-gate: questions a candidate run needs so that one as good as "
        f"{model} ({baseline_dir}) passes each rule with {POWER:.0%} power"
    ]
    for plan in plans:
        size = f"{plan.questions:,} questions" if plan.questions is not None else "no size"
        lines.append(f"  {size:>18}  {plan.rule.describe()} [{plan.rule.tier}]: {plan.reason}")
    sized = [plan.questions for plan in plans if plan.questions is not None]
    if sized:
        lines.append(f"a candidate run of {max(sized):,} questions per task decides every rule")
    return "\n".join(lines)
