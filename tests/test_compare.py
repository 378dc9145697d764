"""Paired comparisons checked against statsmodels/scipy and against known cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ttest_rel
from statsmodels.stats.contingency_tables import mcnemar

from medharness.core.errors import UserError
from medharness.core.records import GenerationRow, InputRow
from medharness.reports.compare import answer_lengths, breakdown, compare_task, pair_rows
from medharness.tasks.metrics.stats import mcnemar_exact


def rows(dicts: list[dict]) -> list[GenerationRow]:
    """Sample rows from the fields a test cares about (compare reads only those)."""
    return [GenerationRow(**{"target": "", "prediction": "", **row}) for row in dicts]


def acc_rows(correct: list[int]) -> list[GenerationRow]:
    return rows([{"doc_id": str(i), "metrics": {"acc": float(c)}} for i, c in enumerate(correct)])


@pytest.mark.parametrize(
    ("base", "cand"),
    [
        ([1] * 30 + [0] * 10 + [1] * 5 + [0] * 5, [1] * 30 + [0] * 10 + [0] * 5 + [1] * 5),
        ([1] * 40 + [0] * 10, [1] * 25 + [0] * 25),
        ([0] * 20 + [1] * 3, [1] * 20 + [0] * 3),
        ([1, 0, 1], [1, 0, 1]),
        ([1] * 1700 + [0] * 1500, [0] * 1700 + [1] * 1500),  # thousands of discordant pairs
    ],
)
def test_mcnemar_equals_statsmodels_exact(base: list[int], cand: list[int]) -> None:
    table = [
        [
            sum(a and b for a, b in zip(base, cand, strict=True)),
            sum(a and not b for a, b in zip(base, cand, strict=True)),
        ],
        [
            sum(b and not a for a, b in zip(base, cand, strict=True)),
            sum(not a and not b for a, b in zip(base, cand, strict=True)),
        ],
    ]
    expected = mcnemar(table, exact=True).pvalue
    assert mcnemar_exact([bool(x) for x in base], [bool(x) for x in cand]) == pytest.approx(
        expected, abs=1e-12
    )
    as_numpy = mcnemar_exact(list(np.array(base) > 0.5), list(np.array(cand) > 0.5))
    assert as_numpy == pytest.approx(expected, abs=1e-12)


def test_clearly_worse_accuracy_is_worse_and_identical_is_no_difference() -> None:
    base = acc_rows([1] * 40 + [0] * 10)
    worse = acc_rows([1] * 20 + [0] * 30)
    [result] = compare_task("medqa_4opt", "a", "b", base, worse, ["acc"], resamples=500)
    assert result.verdict == "worse" and result.p_value < 1e-4
    assert result.difference == pytest.approx(-0.4)
    assert result.ci95[0] < -0.4 < result.ci95[1] < 0
    [same] = compare_task("medqa_4opt", "a", "a2", base, base, ["acc"], resamples=500)
    assert same.verdict == "no significant difference" and same.p_value == 1.0


def test_paired_bootstrap_agrees_with_paired_t_test_on_normal_differences() -> None:
    rng = np.random.default_rng(0)
    base_values = rng.uniform(0.1, 0.5, size=300)
    for shift, significant in ((0.02, True), (0.0, False)):
        cand_values = base_values + shift + rng.normal(0, 0.05, size=300)
        base = rows(
            [{"doc_id": str(i), "metrics": {"rouge1": v}} for i, v in enumerate(base_values)]
        )
        cand = rows(
            [{"doc_id": str(i), "metrics": {"rouge1": v}} for i, v in enumerate(cand_values)]
        )
        [result] = compare_task("medquad_gen", "a", "b", base, cand, ["rouge1"], resamples=2000)
        t_p = ttest_rel(cand_values, base_values).pvalue
        assert (result.p_value < 0.05) == (t_p < 0.05) == significant
        if significant:
            assert result.verdict == "better"
            assert result.p_value == pytest.approx(t_p, abs=0.01)
        diffs = cand_values - base_values
        assert result.effect_size == pytest.approx(diffs.mean() / diffs.std(ddof=1))


def test_bleu_comparison_uses_corpus_scores() -> None:
    targets = [f"the patient has disease number {i} and needs care" for i in range(60)]
    base = rows(
        [
            {"doc_id": str(i), "target": t, "prediction": "the patient", "metrics": {}}
            for i, t in enumerate(targets)
        ]
    )
    cand = rows(
        [
            {"doc_id": str(i), "target": t, "prediction": t, "metrics": {}}
            for i, t in enumerate(targets)
        ]
    )
    [result] = compare_task("medquad_gen", "a", "b", base, cand, ["bleu"], resamples=300)
    assert result.candidate_value == pytest.approx(100.0)
    assert result.verdict == "better" and result.difference > 50


def test_different_sample_sets_are_refused() -> None:
    with pytest.raises(UserError, match="not scored on the same samples"):
        pair_rows(acc_rows([1, 0, 1]), acc_rows([1, 0]), "medqa_4opt")


def test_breakdown_and_lengths() -> None:
    scored = rows(
        [
            {"doc_id": "1", "metrics": {"rouge1": 0.2}, "prediction": "a b c", "target": "a b"},
            {"doc_id": "2", "metrics": {"rouge1": 0.4}, "prediction": "a", "target": "a b c d"},
            {
                "doc_id": "3",
                "metrics": {"rouge1": 1.0},
                "prediction": "a b",
                "target": "a b c d e f",
            },
        ]
    )
    metadata = {"1": {"qtype": "symptoms"}, "2": {"qtype": "symptoms"}, "3": {}}
    inputs = {
        doc: InputRow(doc_id=doc, prompt="", target="", metadata=meta)
        for doc, meta in metadata.items()
    }
    assert breakdown(scored, inputs, "qtype", "rouge1") == {
        "(none)": (1.0, 1),
        "symptoms": (pytest.approx(0.3), 2),
    }
    lengths = answer_lengths(scored)
    assert lengths["generated_mean"] == 2 and lengths["reference_median"] == 4


@pytest.mark.parametrize("method", ["holm", "bh"])
def test_adjusted_p_values_equal_statsmodels(method: str) -> None:
    from statsmodels.stats.multitest import multipletests

    from medharness.tasks.metrics.stats import adjust_p_values

    rng = np.random.default_rng(7)
    for size in (1, 2, 5, 40):
        values = list(rng.uniform(0, 0.2, size=size)) + [0.01, 0.01, 1.0][: size % 3]
        expected = multipletests(values, method="holm" if method == "holm" else "fdr_bh")[1]
        assert adjust_p_values(values, method) == pytest.approx(list(expected))
    assert adjust_p_values([0.2, 0.01], "none") == [0.2, 0.01]
