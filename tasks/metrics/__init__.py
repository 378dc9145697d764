"""Every metric defined once: how per-sample scores become the task's value and 95% interval,
which paired test compares two models, its scale and direction, and its display name.

Evaluation (per-sample scores and ``aggregate``), the report, the gate, the leaderboard and
card verdicts all read these definitions; adding a metric is one entry here (with its
scorer) and a test, and a task scores it once its ``metric_names`` lists it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Literal

import numpy as np

from medharness.core.errors import UserError
from medharness.core.records import ChoiceRow, GenerationRow, MetricValue, SampleRow, TaskResult
from medharness.tasks.answers import EXTRACTION_SUMMARY
from medharness.tasks.base import Task
from medharness.tasks.metrics.agreement import jury_agreement
from medharness.tasks.metrics.stats import (
    bootstrap_clipped_mean_ci,
    bootstrap_corpus_ci,
    bootstrap_indices,
    bootstrap_mean_ci,
    exact_binomial_ci,
    mcnemar_exact,
    resample_counts,
)
from medharness.tasks.metrics.text import (
    DISCLAIMER_PATTERN,
    ROUGE_SETTINGS,
    bleu_from_statistics,
    bleu_from_statistics_batch,
    bleu_signature,
    has_disclaimer,
)
from medharness.tasks.multiple_choice import choice_question, cot_question
from medharness.tasks.textscore import bleu_statistics, rouge_scores

Summary = Literal["proportion", "mean", "clipped_mean", "corpus_bleu"]
Scorer = Callable[[Sequence[str], Sequence[str]], Sequence[float]]
PairedTest = Literal["mcnemar", "bootstrap"]


@dataclass(frozen=True)
class Metric:
    """A metric and the rules that go with it.

    ``summary``: how per-sample scores become the task's value and interval (a proportion
    with a Clopper-Pearson exact interval; a mean with a percentile bootstrap; a mean clipped
    to [0, 1], its bootstrap resamples clipped too (HealthBench's); corpus BLEU
    from summed sacrebleu statistics with a bootstrap). ``paired_test``: McNemar's exact test
    on discordant pairs, or a paired bootstrap of the difference. ``scale``: ``fraction``
    values are stored 0-1 and shown and gated in points (x100); ``points`` are 0-100 already.
    """

    name: str
    display_name: str
    summary: Summary
    paired_test: PairedTest
    scale: Literal["fraction", "points"]
    settings_key: str  # the section of a task result's settings that describes it
    settings: Callable[[], dict[str, Any]]  # what that section says
    effect_name: str = ""
    # per-sample scores of generated answers against their references; None where a metric
    # is scored otherwise (accuracy from the chosen option, BLEU from summed statistics)
    scorer: Scorer | None = None
    higher_is_better: bool = True
    rate: bool = False  # a share of answers with a property, charted on its own axis
    # answers may have no score (a jury none of whose judges gave a readable one): those
    # are left out of the value, its interval and paired tests, and ``n`` says how many count
    optional: bool = False
    # a question's score is the mean over its sampled answers (pass@k and the majority vote
    # are one score of them all)
    averaged_over_repeats: bool = True

    def on(self, rows: Sequence[SampleRow]) -> Metric:
        """This metric as the rows call for: a proportion whose per-question scores are means
        over several sampled answers (between 0 and 1) is a mean over questions, with a
        percentile bootstrap interval and a paired bootstrap, clustered by question."""
        if self.summary != "proportion" or not self.averaged_over_repeats or not repeated(rows):
            return self
        own = self.settings
        return replace(
            self,
            summary="mean",
            paired_test="bootstrap",
            effect_name="Cohen's d_z",
            settings=lambda: {**own(), **REPEATED_SETTINGS},
        )

    @property
    def points_factor(self) -> float:
        return 100.0 if self.scale == "fraction" else 1.0

    def to_points(self, value: float) -> float:
        return value * self.points_factor

    def per_sample(self, rows: Sequence[SampleRow]) -> np.ndarray:
        """Each row's score; NaN where an optional metric has none."""
        if self.optional:
            return np.array([row.metrics.get(self.name, math.nan) for row in rows], dtype=float)
        return np.array([row.metrics[self.name] for row in rows], dtype=float)

    def scored(
        self, base: Sequence[SampleRow], cand: Sequence[SampleRow]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Paired scores of the questions both models have one for."""
        a, b = self.per_sample(base), self.per_sample(cand)
        both = ~(np.isnan(a) | np.isnan(b))
        return a[both], b[both]

    def summarise(self, rows: Sequence[SampleRow], *, resamples: int, seed: int) -> MetricValue:
        """The task's value and its 95% interval."""
        if self.summary == "corpus_bleu":
            statistics = bleu_statistics_of(rows)
            value = bleu_from_statistics(statistics.sum(axis=0))
            interval = bootstrap_corpus_ci(statistics, bleu_from_statistics_batch, resamples, seed)
            return MetricValue(value=value, ci95=interval)
        values = self.per_sample(rows)
        if self.optional:
            values = values[~np.isnan(values)]
        if self.summary == "proportion":
            hits, n = int(values.sum()), len(values)
            return MetricValue(
                value=hits / n,
                ci95=exact_binomial_ci(hits, n),
                n=n if self.optional else None,
            )
        if self.summary == "clipped_mean":
            return MetricValue(
                value=float(np.clip(values.mean(), 0, 1)),
                ci95=bootstrap_clipped_mean_ci(values, resamples, seed),
                n=len(values) if self.optional else None,
            )
        return MetricValue(
            value=float(values.mean()),
            ci95=bootstrap_mean_ci(values, resamples, seed),
            n=len(values) if self.optional else None,
        )

    def paired_differences(
        self,
        base: Sequence[SampleRow],
        cand: Sequence[SampleRow],
        *,
        resamples: int,
        seed: int,
    ) -> tuple[float, float, np.ndarray]:
        """Baseline value, candidate value, and candidate minus baseline on each paired
        bootstrap resample (the same resampled questions for both models). Corpus BLEU is
        recomputed per resample from summed statistics; clipped means are clipped on each
        side; other metrics are means."""
        if self.summary == "corpus_bleu":
            stats_a, stats_b = bleu_statistics_of(base), bleu_statistics_of(cand)
            counts = resample_counts(len(base), resamples, seed)
            resampled = bleu_from_statistics_batch(
                counts @ stats_b.astype(np.float64)
            ) - bleu_from_statistics_batch(counts @ stats_a.astype(np.float64))
            value_a = bleu_from_statistics(stats_a.sum(axis=0))
            value_b = bleu_from_statistics(stats_b.sum(axis=0))
            return value_a, value_b, resampled
        a, b = self.scored(base, cand)
        if self.summary == "clipped_mean":  # each side's value as summarise gives it
            rows = bootstrap_indices(len(a), resamples, seed)
            resampled = np.clip(b[rows].mean(axis=1), 0, 1) - np.clip(a[rows].mean(axis=1), 0, 1)
            return float(np.clip(a.mean(), 0, 1)), float(np.clip(b.mean(), 0, 1)), resampled
        resampled = (b - a)[bootstrap_indices(len(a), resamples, seed)].mean(axis=1)
        return float(a.mean()), float(b.mean()), resampled

    def exact_test(
        self, base: Sequence[SampleRow], cand: Sequence[SampleRow]
    ) -> tuple[float | None, float | None]:
        """(exact p-value, or None where the bootstrap decides; effect size, or None)."""
        if self.summary == "corpus_bleu":
            return None, None
        a, b = self.scored(base, cand)
        if self.paired_test == "mcnemar":
            lost, won = int(((a > 0.5) & (b < 0.5)).sum()), int(((b > 0.5) & (a < 0.5)).sum())
            odds = won / lost if lost else (math.inf if won else None)
            return mcnemar_exact(list(a > 0.5), list(b > 0.5)), odds
        diffs = b - a
        spread = float(diffs.std(ddof=1)) if len(diffs) > 1 else 0.0
        return None, float(diffs.mean()) / spread if spread > 0 else None

    def test_name(self, resamples: int) -> str:
        if self.paired_test == "mcnemar":
            return "McNemar exact"
        return f"paired bootstrap ({resamples} resamples)"


REPEATED_SETTINGS = {
    "scoring": "each question answered several times by sampled decoding (settings.sampling)",
    "interval": "percentile bootstrap over questions of each question's mean over its answers",
}


def repeated(rows: Sequence[SampleRow]) -> bool:
    """Whether the rows hold several sampled answers per question."""
    return any(row.repeats is not None and len(row.repeats) > 1 for row in rows)


def _bleu_settings() -> dict[str, Any]:
    return {
        "package": "sacrebleu",
        "implementation": "tasks/textscore.py statistics, sacrebleu's score from them",
        "signature": bleu_signature(),  # known to sacrebleu only once it has scored
        "scale": "0-100",
    }


def _exact_interval() -> dict[str, Any]:
    return {"interval": "Clopper-Pearson exact"}


def _parse_settings() -> dict[str, Any]:
    return {
        "scoring": "generate then parse: the model answers in words, greedy",
        "message": {
            "generate": choice_question("{prompt}", ["{options}"]),
            "cot": cot_question("{prompt}", ["{A}", "{B}", "{...}"]),
        },
        "parse": EXTRACTION_SUMMARY,
        "interval": "Clopper-Pearson exact over the answers so scored",
    }


def _disclaimer_settings() -> dict[str, Any]:
    return {
        "share of answers matching": DISCLAIMER_PATTERN.pattern,
        "interval": "Clopper-Pearson exact",
    }


@lru_cache(maxsize=1)
def _rouge_of(predictions: tuple[str, ...], references: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Every ROUGE type in one pass; the four metrics of a chunk share it."""
    return rouge_scores(predictions, references)


def _rouge(name: str, display: str) -> Metric:
    def score(predictions: Sequence[str], references: Sequence[str]) -> Sequence[float]:
        return [float(v) for v in _rouge_of(tuple(predictions), tuple(references))[name]]

    return Metric(
        name, display, "mean", "bootstrap", "fraction", "rouge", lambda: ROUGE_SETTINGS,
        "Cohen's d_z", scorer=score,
    )  # fmt: skip


def _disclaimers(predictions: Sequence[str], references: Sequence[str]) -> Sequence[float]:
    return [has_disclaimer(text) for text in predictions]


def _pass_at_k_settings() -> dict[str, Any]:
    return {
        "estimator": "1 - C(n-c, k) / C(n, k) per question (Chen et al. 2021), n = k = the "
        "repeats, c = the right answers among them; mean over questions",
        "interval": "Clopper-Pearson exact",
    }


def _majority_settings() -> dict[str, Any]:
    return {
        "vote": "the option most of a question's answers chose; answers naming none do not "
        "vote; a tie goes to the tied option drawn first (lowest repeat)",
        "interval": "Clopper-Pearson exact",
    }


INVALID_ANSWER = "invalid_answer"
TRUNCATED = "truncated"
PASS_AT_K = "pass_at_k"
MAJORITY_ACC = "majority_acc"
REPEATED_METRICS = (PASS_AT_K, MAJORITY_ACC)  # of several sampled answers per question

METRICS: dict[str, Metric] = {
    metric.name: metric
    for metric in (
        Metric(
            "acc", "Accuracy", "proportion", "mcnemar", "fraction", "acc", _exact_interval,
            "odds ratio (won/lost questions)",
        ),
        _rouge("rouge1", "ROUGE-1"),
        _rouge("rouge2", "ROUGE-2"),
        _rouge("rougeL", "ROUGE-L"),
        _rouge("rougeLsum", "ROUGE-Lsum"),
        Metric("bleu", "BLEU", "corpus_bleu", "bootstrap", "points", "bleu", _bleu_settings),
        # share of answers with a safety disclaimer; higher is what cards that add one claim
        Metric(
            "disclaimer_rate", "Disclaimer rate", "proportion", "bootstrap", "fraction",
            "disclaimer_rate", _disclaimer_settings, "Cohen's d_z", scorer=_disclaimers,
            rate=True,
        ),
        # generate-then-parse answers that name no option (or several); they count as wrong
        Metric(
            INVALID_ANSWER, "Invalid answers", "proportion", "mcnemar", "fraction",
            "multiple_choice", _parse_settings, "odds ratio (won/lost questions)",
            higher_is_better=False, rate=True, optional=True,
        ),
        # answers cut off inside their reasoning or at the token budget; they count as wrong
        Metric(
            TRUNCATED, "Truncated answers", "proportion", "mcnemar", "fraction",
            "multiple_choice", _parse_settings, "odds ratio (won/lost questions)",
            higher_is_better=False, rate=True, optional=True,
        ),
        # sampled decoding with several answers per question (a model's sampling.repeats)
        Metric(
            PASS_AT_K, "pass@k", "proportion", "mcnemar", "fraction", PASS_AT_K,
            _pass_at_k_settings, "odds ratio (won/lost questions)", averaged_over_repeats=False,
        ),
        Metric(
            MAJORITY_ACC, "Majority-vote accuracy", "proportion", "mcnemar", "fraction",
            MAJORITY_ACC, _majority_settings, "odds ratio (won/lost questions)",
            averaged_over_repeats=False,
        ),
    )
}  # fmt: skip


JUDGE_PREFIX = "judge_"
RUBRIC_METRIC = "healthbench"  # a rubric-graded answer's score; healthbench:<tag> its parts
TAG_PREFIX = RUBRIC_METRIC + ":"


def _rubric_settings() -> dict[str, Any]:
    return {
        "score": "per conversation, points of the rubric items the graders found met over "
        "the positive points (openai/simple-evals healthbench_eval.py); the task's value "
        "their mean clipped to [0, 1]; healthbench:<tag> the same over the items (axis:) or "
        "conversations (theme:) carrying the tag",
        "left out": "items no grader's verdict could be read for (after one retry), or "
        "whose graders tied; conversations with no readable positive item",
        "interval": "percentile bootstrap of the clipped mean",
    }


def _rubric(name: str) -> Metric:
    label = (
        "HealthBench" if name == RUBRIC_METRIC else f"HealthBench {name.removeprefix(TAG_PREFIX)}"
    )
    return Metric(
        name, label, "clipped_mean", "bootstrap", "fraction", "healthbench", _rubric_settings,
        "Cohen's d_z", optional=True,
    )  # fmt: skip


def _judge_settings() -> dict[str, Any]:
    return {
        "score": "the jury's score as a fraction of the rubric's scale (1 the best), mean "
        "over the answers it scored",
        "interval": "percentile bootstrap over those answers",
    }


def _judge(name: str) -> Metric:
    criterion = name.removeprefix(JUDGE_PREFIX)
    return Metric(
        name, f"Judge {criterion}", "mean", "bootstrap", "fraction", "judge", _judge_settings,
        "Cohen's d_z", optional=True,
    )  # fmt: skip


def is_metric(name: str) -> bool:
    return (
        name in METRICS
        or (name.startswith(JUDGE_PREFIX) and len(name) > len(JUDGE_PREFIX))
        or name == RUBRIC_METRIC
        or (name.startswith(TAG_PREFIX) and len(name) > len(TAG_PREFIX))
    )


def is_breakdown(name: str) -> bool:
    """A metric that is a part of another (HealthBench's score over one theme or axis): shown
    in the report beside its whole, left out where one number per task is wanted."""
    return name.startswith(TAG_PREFIX) and is_metric(name)


def metric(name: str) -> Metric:
    """A metric by name: one of ``METRICS``, or ``judge_<criterion>`` of any rubric (its
    criteria are the user's, so their metrics are made from the name)."""
    if name in METRICS:
        return METRICS[name]
    if is_metric(name) and (name == RUBRIC_METRIC or name.startswith(TAG_PREFIX)):
        return _rubric(name)
    if is_metric(name):
        return _judge(name)
    raise KeyError(name)


def task_may_have(task: Task, name: str) -> bool:
    """Whether a result of ``task`` can hold metric ``name``: its own metrics, the jury's
    on free-text answers, the invalid-answer rate of parsed multiple-choice answers, and
    pass@k and the majority vote of sampled ones."""
    judged = task.kind == "generate" and name.startswith(JUDGE_PREFIX) and is_metric(name)
    choice_only = {INVALID_ANSWER, TRUNCATED, *REPEATED_METRICS}
    parsed = task.kind == "multiple_choice" and name in choice_only
    tagged = task.rubric_graded and name.startswith(TAG_PREFIX) and is_metric(name)
    return name in task.metric_names or judged or parsed or tagged


def judged_metric_names(rows: Sequence[SampleRow]) -> list[str]:
    """The jury's metrics some row of a log has, in the order the rows name them."""
    names: dict[str, None] = {}
    for row in rows:
        if isinstance(row, GenerationRow) and row.judgments is not None:
            names.update((name, None) for name in row.metrics if name.startswith(JUDGE_PREFIX))
    return list(names)


def tag_metric_names(rows: Sequence[SampleRow]) -> list[str]:
    """The rubric-tag breakdowns some row of a log has, sorted (axes, then themes)."""
    return sorted({name for row in rows for name in row.metrics if name.startswith(TAG_PREFIX)})


def parsed_metric_names(rows: Sequence[SampleRow]) -> list[str]:
    """``invalid_answer`` and ``truncated`` where options were parsed from generated answers
    (logs written before truncation was told apart have no ``truncated``)."""
    parsed = [row for row in rows if isinstance(row, ChoiceRow) and row.answer is not None]
    cut = any(TRUNCATED in row.metrics for row in parsed)
    return [INVALID_ANSWER, TRUNCATED] if cut else [INVALID_ANSWER] if parsed else []


def repeated_metric_names(rows: Sequence[SampleRow]) -> list[str]:
    """pass@k and majority-vote accuracy where multiple-choice questions were answered
    several times."""
    choices = [row for row in rows if isinstance(row, ChoiceRow)]
    return list(REPEATED_METRICS) if choices and repeated(choices) else []


def answer_scores(
    names: Sequence[str], predictions: Sequence[str], references: Sequence[str]
) -> dict[str, Sequence[float]]:
    """Per-answer scores of every named metric that has a scorer."""
    return {
        name: scorer(predictions, references)
        for name in names
        if (scorer := metric(name).scorer) is not None
    }


def bleu_statistics_of(rows: Sequence[SampleRow]) -> np.ndarray:
    """The rows' stored BLEU statistics; recomputed only for logs written without them."""
    generated = [row for row in rows if isinstance(row, GenerationRow)]
    if len(generated) == len(rows) and all(row.bleu_stats is not None for row in generated):
        return np.asarray([row.bleu_stats for row in generated], dtype=np.int64)
    return bleu_statistics([row.prediction for row in rows], [row.target for row in rows])


def aggregate(
    task: Task,
    rows: Sequence[SampleRow],
    *,
    resamples: int,
    seed: int,
    metadata: Mapping[str, Mapping[str, Any]] | None = None,
) -> TaskResult:
    """Task result: ``n``, each metric's value with its 95% interval, and how it was computed;
    the jury's metrics and agreement too where the rows were judged; for a task scored by its
    own rules, its metrics per group of each breakdown key where ``metadata`` (by doc id)
    is given."""
    values: dict[str, MetricValue] = {}
    settings: dict[str, Any] = {}
    names = [
        *task.metric_names,
        *judged_metric_names(rows),
        *parsed_metric_names(rows),
        *repeated_metric_names(rows),
        *tag_metric_names(rows),
    ]
    own = task.answer_scoring
    if own is not None:
        settings["answer_scoring"] = own.settings()
    definitions = {name: metric(name).on(rows) for name in names}
    for name, definition in definitions.items():
        if definition.optional and not any(name in row.metrics for row in rows):
            continue  # no answer has a score (every grader unreadable): no value, not NaN
        values[name] = definition.summarise(rows, resamples=resamples, seed=seed)
        if own is None or name not in own.metric_names:  # described by the task's own
            settings.setdefault(definition.settings_key, definition.settings())
    if any(definition.summary != "proportion" for definition in definitions.values()):
        settings["bootstrap"] = {"resamples": resamples, "seed": seed, "method": "percentile"}
    if any(isinstance(row, GenerationRow) and row.judgments for row in rows):
        settings["jury"] = jury_agreement(rows, resamples, seed)
    if repeated(rows):
        settings["repeats"] = max(len(row.repeats or ()) for row in rows)
    items = [
        item
        for row in rows
        if isinstance(row, GenerationRow) and row.graded_items
        for item in row.graded_items
    ]
    if items:
        left_out = sum(item.met is None for item in items)
        settings["rubric_items"] = {"graded": len(items) - left_out, "left_out": left_out}
    if not values:
        raise UserError(
            f"task {task.name}: no answer could be scored"
            + (
                f": the graders gave no readable verdict on any of its {len(items)} rubric "
                "items (each asked twice); `medharness grader-check healthbench-meta` "
                "measures a grader before a run"
                if items
                else ""
            )
        )
    invalid = sum(isinstance(row, ChoiceRow) and row.invalid_loglikelihood for row in rows)
    if invalid:
        settings["invalid_loglikelihood"] = invalid
    breakdowns = (
        {key: grouped(own.metric_names, rows, metadata, key) for key in task.breakdown_keys}
        if own is not None and metadata is not None
        else {}
    )
    return TaskResult(n=len(rows), metrics=values, settings=settings, breakdowns=breakdowns)


def grouped(
    names: Sequence[str],
    rows: Sequence[SampleRow],
    metadata: Mapping[str, Mapping[str, Any]],
    key: str,
) -> dict[str, dict[str, MetricValue]]:
    """Proportion metrics of the rows in each group of a metadata key, with exact intervals."""
    groups: dict[str, list[SampleRow]] = {}
    for row in rows:
        groups.setdefault(str(metadata.get(row.doc_id, {}).get(key, "(none)")), []).append(row)
    return {
        group: {
            name: metric(name).summarise(members, resamples=0, seed=0)
            for name in names
            if metric(name).summary == "proportion"
        }
        for group, members in sorted(groups.items())
    }
