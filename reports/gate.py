"""The release gate: a decision procedure over finished runs.

Every rule judges an interval, not a point, and says PASS, FAIL, INCONCLUSIVE or MISSING.
A non-inferiority margin (``max_drop``, ``max_relative_drop``) passes when the whole paired
95% interval of the drop (baseline minus candidate) lies below the margin and fails when
the whole interval lies above it; in between the data cannot tell, and the rule says how
many questions would decide it. A floor does the same with the candidate's own interval.
Tiers say what a verdict does: a critical rule blocks on FAIL or INCONCLUSIVE, a supporting
rule on FAIL, an advisory one never; a required task that is absent is MISSING and blocks.

Reads run directories only: no model is called, so re-gating costs seconds.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from medharness.core.errors import UserError
from medharness.core.records import (
    GateDecision,
    GateEffect,
    GateFlips,
    GateRule,
    GateTier,
    GateVerdict,
    MetricValue,
    SuiteResult,
    TaskResult,
)
from medharness.core.validation import Strict, load_yaml_file, validate_file_data
from medharness.reports.comparability import differences
from medharness.reports.compare import pair_rows
from medharness.reports.gate_statistics import (
    CONFIDENCE,
    PairedDrop,
    paired_drop,
    paired_suite_drop,
    questions_to_decide,
    z_of,
)
from medharness.reports.runs import RunData
from medharness.tasks import TASKS
from medharness.tasks.metrics import is_metric, task_may_have
from medharness.tasks.metrics import metric as metric_of

LEGACY_MIN_SAMPLES = 100  # the first policy format's default

RuleKind = Literal[
    "evaluated",
    "min_samples",
    "floor",
    "max_drop",
    "max_relative_drop",
    "max_significant_drop",
    "point_floor",
]
PAIRED_KINDS = ("max_drop", "max_relative_drop", "max_significant_drop")
PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


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


def check_floor_scale(key: str, value: float) -> None:
    """A floor is in the metric's own units: accuracy 0-1, BLEU 0-100."""
    metric = metric_of(split_rule_key(key)[1])
    top = 100.0 / metric.points_factor
    if not 0 <= value <= top:
        hint = f" (did you mean {value / 100:g}?)" if top == 1 and 1 < value <= 100 else ""
        raise ValueError(
            f"{key}: floor {value:g} is outside 0-{top:g}, {metric.display_name}'s own scale{hint}"
        )


class MetricRules(Strict):
    """The rules on one metric of a task; each key given is one rule."""

    model_config = ConfigDict(**Strict.model_config, strict=True)

    tier: GateTier | None = None  # default: the task's
    floor: float | None = None  # the candidate's interval must clear it (metric's units)
    max_drop: Annotated[float, Field(ge=0)] | None = None  # points below the baseline
    max_relative_drop: str | None = None  # "5%": a share of the baseline's value
    max_significant_drop: Annotated[float, Field(ge=0)] | None = None  # the older rule

    @field_validator("max_relative_drop", mode="before")
    @classmethod
    def a_percentage(cls, value: object) -> object:
        """``5%``, with its sign: a bare 5 or 0.05 could mean either."""
        match = PERCENT.match(value) if isinstance(value, str) else None
        if value is not None and (match is None or not 0 < float(match.group(1)) < 100):
            raise ValueError(f"{value!r} is not a percentage between 0% and 100% such as 5%")
        return value


class TaskRules(Strict):
    model_config = ConfigDict(**Strict.model_config, strict=True)

    required: bool = False  # absent from the run: MISSING, which blocks
    tier: GateTier = "critical"  # of the task's rules, unless a metric names its own
    metrics: dict[str, MetricRules] = Field(default_factory=dict)


@dataclass(frozen=True)
class RuleSpec:
    """One rule as the policy states it, before any run is read."""

    task: str
    metric: str | None
    kind: RuleKind
    threshold: float  # margin in points, percent of the baseline, floor, or sample count
    tier: GateTier

    @property
    def key(self) -> str:
        return f"{self.task}.{self.metric}"

    def describe(self) -> str:
        """The rule in words, read the same whatever the verdict."""
        t = f"{self.threshold:g}"
        points = f"{t} point{'s' * (self.threshold != 1)}"
        return {
            "evaluated": f"{self.task} is in the run",
            "min_samples": f"{self.task} has at least {t} samples",
            "floor": f"{self.key} is at least {t}",
            "point_floor": f"{self.key} >= {t}",
            "max_drop": f"{self.key} is at most {points} below the baseline",
            "max_relative_drop": f"{self.key} is at most {t}% below the baseline's value",
            "max_significant_drop": (
                f"{self.key} is not significantly more than {points} below the baseline"
            ),
        }[self.kind]


class Policy(Strict):
    # numbers must be numbers: a quoted "0.05" is refused, not converted
    model_config = ConfigDict(**Strict.model_config, strict=True)

    candidate: str | None = None  # model of the run to gate (default: its last model)
    baseline: str | None = None  # model to compare with (default: see resolve_models)
    alpha: float = Field(0.05, gt=0, lt=0.5)  # one-sided level of max_significant_drop
    inconclusive_blocks: bool = True  # an INCONCLUSIVE critical rule blocks (fail closed)
    tasks: dict[str, TaskRules] = Field(default_factory=dict)
    min_samples: int | None = Field(None, ge=1)
    # the first policy format: every rule critical, every named task required, floors on
    # the point value, regressions the significant-drop rule; still read as it was
    required_tasks: list[str] = Field(default_factory=list)
    floors: dict[str, float] = Field(default_factory=dict)
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
            check_floor_scale(key, value)
        return floors

    @field_validator("tasks")
    @classmethod
    def known_task_metrics(cls, tasks: dict[str, TaskRules]) -> dict[str, TaskRules]:
        for task, rules in tasks.items():
            for metric, metric_rules in rules.metrics.items():
                split_rule_key(f"{task}.{metric}")
                if metric_rules.floor is not None:
                    check_floor_scale(f"{task}.{metric}", metric_rules.floor)
        return tasks

    @model_validator(mode="after")
    def one_format(self) -> Policy:
        if self.tasks and (self.floors or self.regressions or self.required_tasks):
            raise ValueError(
                "a policy has either tasks: (margins and tiers) or the older floors:, "
                "regressions: and required_tasks:, not both; move each under tasks: TASK: "
                "(required: true, metrics: METRIC: floor:, max_drop: or max_significant_drop:)"
            )
        return self

    @property
    def legacy(self) -> bool:
        return not self.tasks and bool(self.floors or self.regressions or self.required_tasks)

    def required(self) -> list[str]:
        if self.legacy:
            return self.gated_tasks()
        return [task for task, rules in self.tasks.items() if rules.required]

    def gated_tasks(self) -> list[str]:
        tasks = list(self.required_tasks) + list(self.tasks)
        for key in [*self.floors, *self.regressions]:
            tasks.append(split_rule_key(key)[0])
        return list(dict.fromkeys(tasks))

    def rules(self) -> list[RuleSpec]:
        """Every rule, task by task, in the policy's order."""
        specs = [
            RuleSpec(task, None, "min_samples", samples, "critical")
            for task in self.gated_tasks()
            if (samples := self.min_samples or (LEGACY_MIN_SAMPLES if self.legacy else None))
        ]
        for key, floor in self.floors.items():
            specs.append(RuleSpec(*split_rule_key(key), "point_floor", floor, "critical"))
        for key, drop in self.regressions.items():
            specs.append(RuleSpec(*split_rule_key(key), "max_significant_drop", drop, "critical"))
        for task, task_rules in self.tasks.items():
            for metric, rules in task_rules.metrics.items():
                tier = rules.tier or task_rules.tier
                given: list[tuple[RuleKind, float | None]] = [
                    ("floor", rules.floor),
                    ("max_drop", rules.max_drop),
                    ("max_relative_drop", percent(rules.max_relative_drop)),
                    ("max_significant_drop", rules.max_significant_drop),
                ]
                specs += [
                    RuleSpec(task, metric, kind, threshold, tier)
                    for kind, threshold in given
                    if threshold is not None
                ]
        return specs


def percent(text: str | None) -> float | None:
    match = PERCENT.match(text) if text is not None else None
    return float(match.group(1)) if match else None


def load_policy(path: Path) -> Policy:
    data = load_yaml_file(path, "policy")
    return validate_file_data(Policy, data, str(path), "policy settings")


@dataclass(frozen=True)
class GateResult:
    candidate: str
    baseline: str | None
    rules: list[GateRule]
    flips: list[GateFlips]
    inconclusive_blocks: bool = True

    @property
    def passed(self) -> bool:
        return not any(rule.effect == "blocks" for rule in self.rules)

    @property
    def warnings(self) -> list[GateRule]:
        return [rule for rule in self.rules if rule.effect == "warns"]

    def record(self) -> GateDecision:
        return GateDecision(
            candidate=self.candidate,
            baseline=self.baseline,
            decision="PASS" if self.passed else "BLOCKED",
            inconclusive_blocks=self.inconclusive_blocks,
            rules=self.rules,
            flips=self.flips,
        )


def effect_of(verdict: GateVerdict, tier: GateTier, inconclusive_blocks: bool) -> GateEffect:
    """What a verdict does to the decision: critical rules block on FAIL and (unless the
    policy says otherwise) INCONCLUSIVE, supporting ones on FAIL, advisory ones never."""
    if verdict == "PASS":
        return "none"
    if tier == "advisory":
        return "warns"
    if verdict in ("FAIL", "MISSING"):
        return "blocks"
    return "blocks" if tier == "critical" and inconclusive_blocks else "warns"


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


def check_known_tasks(policy: Policy, run: RunData, candidate: str) -> None:
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


def member_tasks(run: RunData, model: str, names: list[str]) -> list[str]:
    """The tasks behind gated names: a suite's members, a task itself."""
    suites = run.results.suites.get(model, {})
    return list(
        dict.fromkeys(
            t for name in names for t in (suites[name].tasks if name in suites else [name])
        )
    )


def evaluate_gate(policy: Policy, run_dir: Path, baseline_dir: Path | None) -> GateResult:
    run = RunData.open(run_dir)
    baseline_run = RunData.open(baseline_dir) if baseline_dir else run
    candidate, baseline = resolve_models(policy, run, baseline_run)
    specs = policy.rules()
    if baseline is None and any(spec.kind in PAIRED_KINDS for spec in specs):
        raise UserError(
            "the policy has rules against a baseline but there is no baseline model: pass "
            "--baseline RUN_DIR or run a baseline model first in the same config"
        )
    check_known_tasks(policy, run, candidate)
    check_comparable(run, baseline_run, member_tasks(run, candidate, policy.gated_tasks()))
    evidence = Evidence(policy, run, baseline_run, candidate, baseline)
    rules: list[GateRule] = []
    for task in policy.gated_tasks():
        rules += evidence.judge_task(task, [spec for spec in specs if spec.task == task])
    return GateResult(
        candidate,
        baseline,
        rules,
        evidence.flips(member_tasks(run, candidate, policy.gated_tasks())),
        policy.inconclusive_blocks,
    )


@dataclass(frozen=True)
class Evidence:
    """The runs a gate reads, and how each kind of rule is judged on them."""

    policy: Policy
    run: RunData
    baseline_run: RunData
    candidate: str
    baseline: str | None

    def judged(
        self, spec: RuleSpec, verdict: GateVerdict, evidence: str, **fields: object
    ) -> GateRule:
        return GateRule.model_validate(
            {
                "name": spec.describe(),
                "task": spec.task,
                "metric": spec.metric,
                "kind": spec.kind,
                "tier": spec.tier,
                "verdict": verdict,
                "effect": effect_of(verdict, spec.tier, self.policy.inconclusive_blocks),
                "evidence": evidence,
                **fields,
            }
        )

    def judge_task(self, task: str, specs: list[RuleSpec]) -> list[GateRule]:
        result = result_of(self.run, self.candidate, task)
        if result is None:
            required = task in self.policy.required()
            spec = RuleSpec(task, None, "evaluated", 0, "critical" if required else "advisory")
            why = "required: nothing can be judged" if required else "not required"
            return [self.judged(spec, "MISSING", f"{task} is not in the run ({why})")]
        return [self.judge(spec, result.n) for spec in specs]

    def judge(self, spec: RuleSpec, n: int) -> GateRule:
        if spec.kind == "min_samples":
            verdict: GateVerdict = "PASS" if n >= spec.threshold else "FAIL"
            return self.judged(spec, verdict, f"n = {n}", n=n)
        assert spec.metric is not None
        own = result_of(self.run, self.candidate, spec.task)
        if own is None or spec.metric not in own.metrics:
            return self.judged(spec, "MISSING", f"{spec.metric} is not in the candidate's results")
        if spec.kind == "point_floor":
            value = own.metrics[spec.metric].value
            verdict = "PASS" if value >= spec.threshold else "FAIL"
            return self.judged(spec, verdict, f"measured {value:.4f}", estimate=value, n=n)
        if spec.kind == "floor":
            return self.judge_floor(
                spec, own.metrics[spec.metric], own.n, "repeats" in own.settings
            )
        assert self.baseline is not None
        theirs = result_of(self.baseline_run, self.baseline, spec.task)
        if theirs is None or spec.metric not in theirs.metrics:
            return self.judged(spec, "MISSING", f"{spec.metric} is not in the baseline's results")
        pair = self.paired(spec.metric, spec.task, self.baseline)
        if spec.kind == "max_significant_drop":
            return self.judge_significant_drop(spec, pair)
        return self.judge_margin(spec, pair)

    def judge_floor(
        self, spec: RuleSpec, value: MetricValue, n: int, repeated: bool = False
    ) -> GateRule:
        """The candidate's 95% interval above the floor passes, below it fails."""
        low, high = value.ci95
        n = value.n if value.n is not None else n
        verdict = three_way(low >= spec.threshold, high < spec.threshold)
        words = {
            "PASS": "the whole interval clears the floor",
            "FAIL": "the whole interval is below the floor",
            "INCONCLUSIVE": "the interval straddles the floor",
        }[verdict]
        needed = None
        if verdict == "INCONCLUSIVE":
            spread = (high - low) / (2 * z_of(CONFIDENCE)) * math.sqrt(n)
            needed = questions_to_decide(spread, value.value - spec.threshold)
        return self.judged(
            spec,
            verdict,
            f"candidate {value.value:.4f} (95% CI {low:.4f} to {high:.4f}, n = {n}); "
            f"floor {spec.threshold:g}: {words}" + needed_words(needed),
            estimate=value.value,
            interval=(low, high),
            interval_method=own_interval_name(spec.metric or "", repeated),
            threshold=spec.threshold,
            n=n,
            questions_needed=needed,
        )

    def judge_margin(self, spec: RuleSpec, pair: PairedDrop) -> GateRule:
        """Non-inferiority: the drop's whole interval below the margin passes, above fails."""
        margin = spec.threshold
        relative = ""
        if spec.kind == "max_relative_drop":
            margin = spec.threshold / 100 * pair.baseline_points
            relative = f" ({spec.threshold:g}% of the baseline's {pair.baseline_points:.2f})"
        low, high = pair.interval
        verdict = three_way(high < margin, low > margin)
        words = {
            "PASS": "the whole interval is below the margin",
            "FAIL": "the whole interval is above the margin: worse by more than allowed",
            "INCONCLUSIVE": "the interval contains the margin",
        }[verdict]
        needed = (
            questions_to_decide(pair.spread, margin - pair.drop)
            if verdict == "INCONCLUSIVE"
            else None
        )
        return self.judged(
            spec,
            verdict,
            f"drop {signed(pair.drop)} points, baseline {pair.baseline_value:.4f} vs candidate "
            f"{pair.candidate_value:.4f} (95% CI of the drop {signed(low)} to {signed(high)}, "
            f"{pair.method}, n = {pair.n}); margin {margin:.2f} points{relative}: {words}"
            + needed_words(needed),
            estimate=pair.drop,
            interval=pair.interval,
            interval_method=pair.method,
            threshold=margin,
            n=pair.n,
            questions_needed=needed,
        )

    def judge_significant_drop(self, spec: RuleSpec, pair: PairedDrop) -> GateRule:
        """The older rule: FAIL only when significantly worse by more than the allowed drop
        (its one-sided lower bound above it); a small run passes whatever its drop."""
        alpha = self.policy.alpha
        lower = pair.drop_quantile(alpha)
        failed = lower > spec.threshold
        return self.judged(
            spec,
            "FAIL" if failed else "PASS",
            f"drop {signed(pair.drop)} points, baseline {pair.baseline_value:.4f} vs candidate "
            f"{pair.candidate_value:.4f}; one-sided {1 - alpha:.0%} lower bound of the drop "
            f"{signed(lower)} " + ("above" if failed else "not above") + f" the allowed "
            f"{spec.threshold:g} (paired bootstrap, n = {pair.n})",
            estimate=pair.drop,
            threshold=spec.threshold,
            n=pair.n,
        )

    def paired(self, metric: str, name: str, baseline: str) -> PairedDrop:
        """The paired drop on a task, or on a suite's average (resampled within its tasks)."""
        settings = self.run.manifest.bootstrap_settings()
        suite = self.run.results.suites.get(self.candidate, {}).get(name)
        if suite is None:
            return paired_drop(
                metric,
                self.baseline_run.samples(baseline, name),
                self.run.samples(self.candidate, name),
                resamples_and_seed=settings,
            )
        return paired_suite_drop(
            metric,
            [self.baseline_run.samples(baseline, task) for task in suite.tasks],
            [self.run.samples(self.candidate, task) for task in suite.tasks],
            resamples_and_seed=settings,
        )

    def flips(self, tasks: list[str]) -> list[GateFlips]:
        """Per task scored by accuracy: the questions that changed between the two models."""
        found = []
        for task in tasks:
            if self.baseline is None:
                break
            own = self.run.results.result(self.candidate, task)
            theirs = self.baseline_run.results.result(self.baseline, task)
            if own is None or theirs is None or "acc" not in own.metrics:
                continue
            base, cand = pair_rows(
                self.baseline_run.samples(self.baseline, task),
                self.run.samples(self.candidate, task),
                task,
            )
            pairs = [
                (b.doc_id, b.metrics["acc"] > 0.5, c.metrics["acc"] > 0.5)
                for b, c in zip(base, cand, strict=True)
            ]
            found.append(
                GateFlips(
                    task=task,
                    right_to_wrong=[doc for doc, b, c in pairs if b and not c],
                    wrong_to_right=[doc for doc, b, c in pairs if c and not b],
                )
            )
        return found


def own_interval_name(metric: str, repeated: bool = False) -> str:
    """The interval a task result stores for a metric (see ``Metric.summarise``); of the
    per-question means where questions were answered several times (``Metric.on``)."""
    definition = metric_of(metric)
    averaged = repeated and definition.averaged_over_repeats
    summary = "mean" if averaged else definition.summary
    return "Clopper-Pearson exact" if summary == "proportion" else "percentile bootstrap"


def signed(points: float) -> str:
    """+1.25 or -0.50; a difference that rounds to zero is +0.00, never -0.00."""
    return f"{round(points, 2) + 0.0:+.2f}"


def three_way(passed: bool, failed: bool) -> GateVerdict:
    return "PASS" if passed else "FAIL" if failed else "INCONCLUSIVE"


def needed_words(needed: int | None) -> str:
    return (
        f"; about {needed} questions would decide it at the observed difference and spread"
        if needed is not None
        else ""
    )


def result_of(run: RunData, model: str, name: str) -> TaskResult | SuiteResult | None:
    """A model's result on a task, or its average on a suite the run reports."""
    return run.results.result(model, name) or run.results.suites.get(model, {}).get(name)
