"""Metric and interval checks against independent references (rouge_score, sacrebleu, scipy)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import sacrebleu
from rouge_score import rouge_scorer
from scipy.stats import beta

from medharness.tasks.metrics.stats import bootstrap_corpus_ci, bootstrap_mean_ci, exact_binomial_ci
from medharness.tasks.metrics.text import (
    bleu_from_statistics,
    bleu_from_statistics_batch,
    corpus_bleu,
    rouge,
)
from medharness.tasks.textscore import bleu_statistics

# (prediction, reference, expected rouge1 F, rouge2 F) worked out by hand
ROUGE_CASES = [
    ("the cat sat", "the cat sat", 1.0, 1.0),
    ("the cat", "the cat sat on the mat", 2 * (1.0 * (2 / 6)) / (1.0 + 2 / 6), 2 * (1 * 0.2) / 1.2),
    ("", "anything", 0.0, 0.0),
    ("Dogs BARK!", "dogs bark", 1.0, 1.0),  # default tokenizer lowercases, drops punctuation
]


@pytest.mark.parametrize(("prediction", "reference", "r1", "r2"), ROUGE_CASES)
def test_rouge_hand_cases(prediction: str, reference: str, r1: float, r2: float) -> None:
    scores = rouge(prediction, reference)
    assert scores["rouge1"] == pytest.approx(r1, abs=1e-9)
    assert scores["rouge2"] == pytest.approx(r2, abs=1e-9)


def test_rouge_equals_rouge_score_without_stemmer() -> None:
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"])
    prediction, reference = "Running tests helps.\nAlways run them.", "Tests run.\nRun always."
    expected = scorer.score(reference, prediction)
    for name, value in rouge(prediction, reference).items():
        assert value == pytest.approx(expected[name].fmeasure, abs=1e-12)


def _corpus(seed: int, n: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    words = [
        "the",
        "a",
        "patient",
        "disease",
        "treatment",
        "symptoms",
        "may",
        "include",
        "fever",
        "pain",
        "rare",
        "gene",
    ]
    predictions = [" ".join(rng.choices(words, k=rng.randint(0, 12))) for _ in range(n)]
    references = [" ".join(rng.choices(words, k=rng.randint(1, 12))) for _ in range(n)]
    return predictions, references


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bleu_from_summed_statistics_equals_sacrebleu_on_subsets(seed: int) -> None:
    predictions, references = _corpus(seed, 40)
    statistics = bleu_statistics(predictions, references)
    rng = np.random.default_rng(seed)
    for _ in range(5):
        subset = rng.integers(0, 40, size=40)
        expected = sacrebleu.corpus_bleu(
            [predictions[i] for i in subset], [[references[i] for i in subset]]
        ).score
        assert bleu_from_statistics(statistics[subset].sum(axis=0)) == pytest.approx(expected)
    value, signature = corpus_bleu(predictions, references)
    assert value == pytest.approx(sacrebleu.corpus_bleu(predictions, [references]).score)
    assert signature.startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")


@pytest.mark.parametrize(("k", "n"), [(0, 10), (5, 10), (10, 10), (37, 120)])
def test_exact_interval_equals_clopper_pearson_from_beta(k: int, n: int) -> None:
    low = 0.0 if k == 0 else beta.ppf(0.025, k, n - k + 1)
    high = 1.0 if k == n else beta.ppf(0.975, k + 1, n - k)
    assert exact_binomial_ci(k, n) == pytest.approx((low, high), abs=1e-9)


def test_bootstrap_mean_interval_is_seeded_and_covers_the_mean() -> None:
    values = np.random.default_rng(3).normal(0.3, 0.1, size=200)
    first = bootstrap_mean_ci(values, 1000, seed=7)
    assert first == bootstrap_mean_ci(values, 1000, seed=7)
    assert first[0] < values.mean() < first[1]
    # normal-theory half width 1.96 * sd / sqrt(n): the bootstrap agrees within 15%
    expected = 1.96 * values.std(ddof=1) / np.sqrt(len(values))
    assert (first[1] - first[0]) / 2 == pytest.approx(expected, rel=0.15)


def test_bleu_bootstrap_interval_brackets_the_corpus_score() -> None:
    predictions, references = _corpus(5, 60)
    statistics = bleu_statistics(predictions, references)
    low, high = bootstrap_corpus_ci(statistics, bleu_from_statistics_batch, 300, seed=1)
    assert low <= corpus_bleu(predictions, references)[0] <= high
    assert low < high


@pytest.mark.parametrize("seed", range(8))
def test_vectorised_bleu_equals_sacrebleu(seed: int) -> None:
    rng = np.random.default_rng(seed)
    predictions, references = _corpus(seed, 30)
    predictions[0] = ""  # an empty answer among the rows
    statistics = bleu_statistics(predictions, references)
    subsets = [rng.integers(0, 30, size=int(rng.integers(1, 30))) for _ in range(20)]
    summed = np.array([statistics[subset].sum(axis=0) for subset in subsets])
    expected = [
        sacrebleu.corpus_bleu(
            [predictions[i] for i in subset], [[references[i] for i in subset]]
        ).score
        for subset in subsets
    ]
    assert bleu_from_statistics_batch(summed) == pytest.approx(expected, abs=1e-9)


def test_a_metric_added_in_one_place_reaches_evaluation_comparison_and_reports(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One Metric entry (with its scorer) is all evaluation, aggregation, paired tests and
    the report's points need; the task only lists it."""
    import dataclasses

    from medharness.evaluate import evaluate_samples
    from medharness.reports.compare import compare_task
    from medharness.reports.html import points
    from medharness.tasks import Sample, get_task
    from medharness.tasks.metrics import METRICS, Metric, aggregate

    def words(predictions: list[str], references: list[str]) -> list[float]:
        return [float(len(text.split()) > 3) for text in predictions]

    long_answers = Metric(
        "long_answer_rate", "Long answers", "proportion", "bootstrap", "fraction",
        "long_answer_rate", lambda: {"interval": "Clopper-Pearson exact"}, "Cohen's d_z",
        scorer=words, rate=True,
    )  # fmt: skip
    monkeypatch.setitem(METRICS, "long_answer_rate", long_answers)
    task = dataclasses.replace(get_task("medquad_gen"), metric_names=("long_answer_rate",))

    class Scripted:
        chunk_size = 8

        def __init__(self, answer: str) -> None:
            self.answer = answer

        def generate(self, messages: list[str], max_new_tokens: int, progress: object = None):
            return [self.answer for _ in messages]

        def loglikelihoods(self, requests: list[tuple[str, str]]) -> list[float]:
            raise AssertionError("not a multiple-choice task")

        def describe(self) -> dict[str, str]:
            return {"kind": "scripted"}

    samples = [Sample(doc_id=str(i), prompt="q", target="a b") for i in range(40)]
    short = evaluate_samples(Scripted("yes"), task, samples, max_new_tokens=4)
    long = evaluate_samples(Scripted("a much longer answer here"), task, samples, max_new_tokens=4)
    assert short[0].metrics == {"long_answer_rate": 0.0}
    result = aggregate(task, long, resamples=200, seed=1)
    assert result.metrics["long_answer_rate"].value == 1.0
    assert result.settings["long_answer_rate"] == {"interval": "Clopper-Pearson exact"}
    [comparison] = compare_task(task.name, "short", "long", short, long, ["long_answer_rate"])
    assert comparison.verdict == "better" and comparison.effect_name == "Cohen's d_z"
    assert points("long_answer_rate", 0.25) == 25.0
