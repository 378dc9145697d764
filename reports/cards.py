"""Model-card claims as data, the run that re-makes a card, and a verdict per claim.

A card file (``cards/*.yaml``) names the card's model, its training recipe as far as the card
says it, the tasks standing in for its evaluation, what it claims and what it leaves
unspecified. ``medharness reproduce`` turns it into an ordinary run config (base model, and
the tuned model with a ``train:`` block), runs it, and judges each claim from the finished
run directory: reproduced within tolerance, not reproduced (with the measured value), or not
checkable (and why). Substitutions (another model, a recipe or precision this machine cannot
run, a smaller budget) are applied openly and listed with the verdict.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from medharness.config import RunConfig, parse_config
from medharness.core.validation import Strict, load_yaml_file, validate_file_data
from medharness.reports.compare import Comparison, compare_suite, compare_task
from medharness.reports.runs import RunData
from medharness.tasks import TASKS
from medharness.tasks.metrics import is_metric, task_may_have
from medharness.tasks.metrics import metric as metric_of
from medharness.tasks.suites import SUITES
from medharness.trainers.spec import TrainSpec

ClaimKind = Literal[
    "value",  # a metric of the base or tuned model
    "delta",  # tuned minus base on a metric
    "improves",  # the tuned model is significantly better than the base on a metric
    "sweep_point",  # the validation metric of one sweep point
    "sweep_best",  # which sweep point is best
    "loss_decreases",  # the training loss falls
    "linear_decay",  # the learning rate decays linearly
    "not_checkable",  # a claim medharness cannot check, with the reason
]
Status = Literal["reproduced", "not reproduced", "not checkable"]


class Claim(Strict):
    id: str
    kind: ClaimKind
    text: str  # the claim as the card makes it
    model: Literal["base", "tuned"] = "tuned"
    task: str | None = None
    metric: str | None = None
    value: float | None = None
    tolerance: float | None = None  # absolute, in the metric's units
    params: dict[str, float | int] | None = None  # sweep point
    reason: str | None = None  # why a claim is not checkable

    @model_validator(mode="after")
    def complete(self) -> Claim:
        needs = {
            "value": ("task", "metric", "value"),
            "delta": ("task", "metric", "value"),
            "improves": ("task", "metric"),
            "sweep_point": ("params", "value"),
            "sweep_best": ("params",),
            "not_checkable": ("reason",),
        }.get(self.kind, ())
        missing = [name for name in needs if getattr(self, name) is None]
        if missing:
            raise ValueError(f"claim {self.id} ({self.kind}) needs {', '.join(missing)}")
        if self.task is not None:
            members = SUITES.get(self.task, (self.task,))  # a suite: its average
            if any(task not in TASKS for task in members):
                raise ValueError(f"claim {self.id}: unknown task or suite {self.task!r}")
            if self.metric is not None and not all(
                task_may_have(TASKS[task], self.metric) for task in members
            ):
                raise ValueError(f"claim {self.id}: unknown metric {self.metric!r}")
        return self


class Card(Strict):
    id: str
    title: str
    source: str  # where the card was published, as the card names it
    model: str  # the card's base model (a hub id)
    training_data: str  # what the card says it trained on
    tasks: list[dict[str, Any]] = Field(min_length=1)  # run-config task entries
    train: TrainSpec | None = None  # the recipe, as far as the card says
    notes: list[str] = Field(default_factory=list)  # what had to be assumed, and why
    unspecified: list[str] = Field(default_factory=list)  # what the card does not say
    claims: list[Claim] = Field(default_factory=list)

    @model_validator(mode="after")
    def claims_on_card_tasks(self) -> Card:
        names = {task.get("name") for task in self.tasks}
        for claim in self.claims:
            if claim.task is not None and claim.task not in names:
                raise ValueError(f"claim {claim.id}: task {claim.task} is not in tasks")
        return self


def load_card(path: Path) -> Card:
    return validate_file_data(Card, load_yaml_file(path, "card"), str(path), "card fields")


# What ``--budget small`` caps, to check a card end to end on a CPU in minutes.
SMALL_BUDGET = {
    "train_limit": 48,
    "max_steps": 6,
    "max_seq_length": 128,
    "task_limit": 16,
    "validation_limit": 8,
    "max_new_tokens": 48,
}


@dataclass(frozen=True)
class Plan:
    config: RunConfig
    substitutions: list[str]
    substituted_model: str | None  # the model run in place of the card's, if any


def plan_run(card: Card, model: str | None, budget: str, cuda: bool) -> Plan:
    """The run config that re-makes ``card``, and every way it departs from the card."""
    substitutions = []
    spec = model or card.model
    if model and model != card.model:
        substitutions.append(f"model {model} in place of {card.model}")
    train = card.train.model_dump(mode="json") if card.train else None
    if train is not None and not cuda:
        if train["recipe"] == "qlora":
            train["recipe"] = "lora"
            substitutions.append("recipe lora in place of qlora (4-bit needs a CUDA GPU)")
        if train["precision"] in ("bf16", "fp16"):
            substitutions.append(f"precision fp32 in place of {train['precision']} (no CUDA GPU)")
            train["precision"] = "fp32"
    tasks = [dict(task) for task in card.tasks]
    max_new_tokens = 128
    if budget == "small":
        caps = SMALL_BUDGET
        for task in tasks:
            task["limit"] = min(task.get("limit") or caps["task_limit"], caps["task_limit"])
        max_new_tokens = caps["max_new_tokens"]
        if train is not None:
            train["limit"] = min(train.get("limit") or caps["train_limit"], caps["train_limit"])
            train["max_steps"] = caps["max_steps"]
            train["max_seq_length"] = min(train["max_seq_length"], caps["max_seq_length"])
            train["logging_steps"] = 1
            if train.get("sweep"):
                train["sweep"]["validation_limit"] = caps["validation_limit"]
        substitutions.append(
            "small budget: at most {train_limit} training examples and {max_steps} steps, "
            "sequences of {max_seq_length} tokens, {task_limit} test and {validation_limit} "
            "validation questions, {max_new_tokens} new tokens".format(**caps)
        )
    models: list[dict[str, Any]] = [{"name": "base", "model": spec}]
    if train is not None:
        models.append({"name": "tuned", "model": spec, "train": train})
    config = parse_config(
        {
            "name": f"reproduce-{card.id}",
            "models": models,
            "tasks": tasks,
            "generation": {"max_new_tokens": max_new_tokens},
        },
        f"card {card.id}",
    )
    substituted = model if model and model != card.model else None
    return Plan(config, substitutions, substituted)


@dataclass(frozen=True)
class Verdict:
    claim: str
    text: str
    status: Status
    claimed: str
    measured: str
    detail: str


@dataclass
class VerdictTable:
    card: str
    title: str
    model: str
    substitutions: list[str]
    unspecified: list[str]
    notes: list[str]
    substituted_model: str | None = None
    verdicts: list[Verdict] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Claims about what the card's own model measured: a substituted model cannot check them.
MODEL_NUMBERS: frozenset[ClaimKind] = frozenset(
    {"value", "delta", "improves", "sweep_point", "sweep_best"}
)
SUBSTITUTED = "substituted model: the run checks the pipeline, not the card's numbers"


def judge(
    card: Card, run_dir: Path, substitutions: list[str], substituted_model: str | None = None
) -> VerdictTable:
    """A verdict per claim, from the finished run directory alone. With a substituted model
    the claims on the card model's numbers are not checkable (their measured value shown)."""
    run = RunData.open(run_dir)
    table = VerdictTable(
        card=card.id,
        title=card.title,
        model=card.model,
        substitutions=substitutions,
        unspecified=card.unspecified,
        notes=card.notes,
        substituted_model=substituted_model,
    )
    for claim in card.claims:
        verdict = judge_claim(claim, run)
        if substituted_model is not None and claim.kind in MODEL_NUMBERS:
            detail = f"{SUBSTITUTED}; {verdict.detail}"
            verdict = replace(verdict, status="not checkable", detail=detail)
        table.verdicts.append(verdict)
    return table


def fmt(value: float | None, metric: str | None = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    on_points_scale = (
        metric is not None and is_metric(metric) and metric_of(metric).scale == "points"
    )
    return f"{value:.2f}" if on_points_scale else f"{value:.4f}"


def judge_claim(claim: Claim, run: RunData) -> Verdict:
    def verdict(status: Status, claimed: str, measured: str, detail: str) -> Verdict:
        return Verdict(claim.id, claim.text, status, claimed, measured, detail)

    results = run.results.results
    if claim.kind == "not_checkable":
        proxy = run.results.result(claim.model, claim.task or "")
        stored = proxy.metrics.get(claim.metric or "") if proxy else None
        measured = stored.value if stored else None
        shown = (
            f"{fmt(measured, claim.metric)} ({claim.task}, proxy)" if measured is not None else "-"
        )
        return verdict("not checkable", fmt(claim.value, claim.metric), shown, claim.reason or "")
    if claim.kind in ("value", "delta", "improves"):
        assert claim.task and claim.metric
        if "tuned" not in results and claim.kind != "value":
            return verdict("not checkable", "-", "-", "the run has no tuned model")
        metric, task = claim.metric, claim.task

        def measured_of(model: str) -> float:
            found = results[model].get(task) or run.results.suites[model][task]
            return found.metrics[metric].value

        if claim.kind == "value":
            measured = measured_of(claim.model)
            return within(verdict, claim, measured)
        comparison = base_to_tuned(run, task, metric)
        significance = (
            f"tuned - base {comparison.difference:+.4f}, 95% CI "
            f"[{comparison.ci95[0]:+.4f}, {comparison.ci95[1]:+.4f}], p = {comparison.p_value:.3g}"
        )
        if claim.kind == "delta":
            return within(verdict, claim, comparison.difference, significance)
        better = comparison.verdict == "better"
        return verdict(
            "reproduced" if better else "not reproduced",
            "tuned better",
            comparison.verdict,
            significance,
        )
    if claim.kind in ("sweep_point", "sweep_best"):
        sweeps = run.sweeps()
        if "tuned" not in sweeps:
            return verdict("not checkable", "-", "-", "the run has no sweep")
        sweep = sweeps["tuned"]
        points = sweep["points"]
        if claim.kind == "sweep_best":
            best = points[sweep["best"]]["params"]
            same = best == claim.params
            return verdict(
                "reproduced" if same else "not reproduced",
                params_text(claim.params or {}),
                params_text(best),
                f"best of {len(points)} points by validation {sweep['metric']}",
            )
        point = next((p for p in points if p["params"] == claim.params), None)
        if point is None:
            return verdict("not checkable", fmt(claim.value), "-", f"no sweep point {claim.params}")
        return within(verdict, claim, float(point["value"]), f"validation, n = {point.get('n')}")
    log = run.train_log("tuned")
    losses = [row.loss for row in log if row.loss is not None]
    if len(losses) < 2:
        return verdict("not checkable", "-", "-", "fewer than two logged training steps")
    if claim.kind == "loss_decreases":
        half = max(1, len(losses) // 4)
        first, last = sum(losses[:half]) / half, sum(losses[-half:]) / half
        return verdict(
            "reproduced" if last < first else "not reproduced",
            "falls",
            f"{first:.3f} -> {last:.3f}",
            f"mean of the first and last {half} of {len(losses)} logged steps",
        )
    points = [(row.step, row.learning_rate) for row in log if row.learning_rate]
    steps, rates = (np.array(values, dtype=float) for values in zip(*points, strict=True))
    slope, intercept = np.polyfit(steps, rates, 1)
    residual = float(np.abs(rates - (slope * steps + intercept)).max())
    linear = slope < 0 and residual <= 1e-3 * float(rates.max())
    return verdict(
        "reproduced" if linear else "not reproduced",
        "linear decay",
        f"{rates[0]:.3g} -> {rates[-1]:.3g}",
        f"straight-line fit over {len(rates)} logged steps: slope {slope:.3g}, "
        f"largest residual {residual:.2g}",
    )


def base_to_tuned(run: RunData, task: str, metric: str) -> Comparison:
    """Tuned against base on a task, or on a suite's average (paired within its tasks)."""
    suite = run.results.suites.get("base", {}).get(task)
    if suite is None:
        base, tuned = run.samples("base", task), run.samples("tuned", task)
        return compare_task(task, "base", "tuned", base, tuned, [metric])[0]
    logs = {name: {t: run.samples(name, t) for t in suite.tasks} for name in ("base", "tuned")}
    return compare_suite(task, "base", "tuned", logs["base"], logs["tuned"], [metric])[0]


def params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{key} {value:g}" for key, value in params.items())


def within(verdict: Any, claim: Claim, measured: float, extra: str = "") -> Verdict:
    assert claim.value is not None
    tolerance = claim.tolerance if claim.tolerance is not None else default_tolerance(claim)
    close = abs(measured - claim.value) <= tolerance
    detail = f"tolerance ±{tolerance:g}" + (f"; {extra}" if extra else "")
    status: Status = "reproduced" if close else "not reproduced"
    result: Verdict = verdict(
        status, fmt(claim.value, claim.metric), fmt(measured, claim.metric), detail
    )
    return result


def default_tolerance(claim: Claim) -> float:
    """Two points on the 0-100 scale, in the metric's own units."""
    known = claim.metric is not None and is_metric(claim.metric)
    return 2.0 / (metric_of(claim.metric).points_factor if known and claim.metric else 100.0)
