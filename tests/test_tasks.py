"""Loaders on fixtures in the real formats; prompts checked against lm-eval's own functions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import MEDQA_ROWS, MEDQUAD_QUESTIONS, REAL_DATA
from lm_eval.tasks.medmcqa.utils_medmcqa import doc_to_text as lm_eval_medmcqa_text
from lm_eval.tasks.medqa.preprocess_medqa import doc_to_text as lm_eval_medqa_text
from lm_eval.tasks.pubmedqa.preprocess_pubmedqa import doc_to_text as lm_eval_pubmedqa_text

from medharness.core.errors import UserError
from medharness.tasks import TASKS, get_task, medcalc, medmcqa, medqa, medquad, mmlu, pubmedqa
from medharness.tasks.medquad import load_pairs, normalise_question, split_of, split_pairs


def test_registry_names_match_the_design() -> None:
    assert list(TASKS) == [
        "medquad_gen",
        "medqa_4opt",
        "medqa_5opt",
        "medqa_mainland",
        "medqa_taiwan",
        "pubmedqa",
        "medmcqa",
        "mmlu_anatomy",
        "mmlu_clinical_knowledge",
        "mmlu_college_biology",
        "mmlu_college_medicine",
        "mmlu_medical_genetics",
        "mmlu_professional_medicine",
        "medcalc",
        "healthbench",
        "healthbench_hard",
        "healthbench_consensus",
    ]
    for module in (medquad, medqa, medmcqa, pubmedqa, mmlu, medcalc):
        for heading in ("Dataset", "Paper", "License"):
            assert heading in (module.__doc__ or ""), (module.__name__, heading)
        assert module.VERSION


def test_medqa_prompt_equals_lm_eval(fixture_data: Path) -> None:
    samples = get_task("medqa_4opt").load(fixture_data / "medqa").samples
    assert len(samples) == len(MEDQA_ROWS)
    for sample, row in zip(samples, MEDQA_ROWS, strict=True):
        hf_doc = {
            "sent1": row["question"],
            "label": "ABCD".index(row["answer_idx"]),
            **{f"ending{i}": row["options"]["ABCD"[i]] for i in range(4)},
        }
        assert sample.prompt == lm_eval_medqa_text(hf_doc)
        assert sample.choices == ("A", "B", "C", "D")
        assert sample.choices[sample.gold] == row["answer_idx"]


def test_medqa_5opt_keeps_five_options(fixture_data: Path) -> None:
    sample = get_task("medqa_5opt").load(fixture_data / "medqa").samples[0]
    assert sample.choices == ("A", "B", "C", "D", "E")
    assert "\nE. epsilon 0\nAnswer:" in sample.prompt


def test_medmcqa_prompt_equals_lm_eval_and_gold_is_zero_based(fixture_data: Path) -> None:
    rows = [json.loads(line) for line in (fixture_data / "medmcqa/dev.jsonl").open()]
    samples = get_task("medmcqa").load(fixture_data / "medmcqa").samples
    for sample, row in zip(samples, rows, strict=True):
        assert sample.prompt == lm_eval_medmcqa_text(row)
        assert sample.gold == row["cop"] - 1


def test_pubmedqa_prompt_equals_lm_eval(fixture_data: Path) -> None:
    entries = json.loads((fixture_data / "pubmedqa/test_set.json").read_text())
    samples = get_task("pubmedqa").load(fixture_data / "pubmedqa").samples
    for sample in samples:
        entry = entries[sample.doc_id]
        assert sample.prompt == lm_eval_pubmedqa_text(entry)
        assert sample.target == entry["final_decision"]


def test_corrupt_jsonl_line_names_file_and_line(tmp_path: Path) -> None:
    folder = tmp_path / "medqa"
    folder.mkdir()
    good = json.dumps(
        {**MEDQA_ROWS[0], "options": dict(list(MEDQA_ROWS[0]["options"].items())[:4])}
    )
    (folder / "us_4opt_test.jsonl").write_text(good + "\n{not json\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"us_4opt_test\.jsonl:2: not valid JSON"):
        get_task("medqa_4opt").load(folder)


def test_medquad_skips_empty_answers_and_keeps_metadata(fixture_data: Path) -> None:
    pairs, digests = load_pairs(fixture_data / "medquad")
    assert len(pairs) == len(MEDQUAD_QUESTIONS) + 1  # empty "What causes" answers skipped
    assert len({p.doc_id for p in pairs}) == len(pairs)
    first = next(p for p in pairs if p.doc_id == "1_Fixture_QA/0000000#1")
    assert (first.qtype, first.source, first.focus) == ("information", "Fixture", "Focus 0000000")
    assert first.answer == "Condition 0 is a disorder.\nIt affects organ 0."
    assert set(digests) == {"medquad/1_Fixture_QA/ (60 files)", "medquad/2_Other_QA/ (1 files)"}


def test_medquad_split_keeps_a_question_in_one_split(fixture_data: Path) -> None:
    pairs, _ = load_pairs(fixture_data / "medquad")
    splits = split_pairs(pairs)
    assert sum(len(v) for v in splits.values()) == len(pairs)
    assert all(splits.values()), "60 questions should fill every split"
    seen: dict[str, str] = {}
    for name, members in splits.items():
        for pair in members:
            assert seen.setdefault(normalise_question(pair.question), name) == name
    assert split_of("What is (are) Condition 0 ?") == split_of("WHAT IS (ARE) CONDITION 0?")


@pytest.mark.skipif(REAL_DATA is None, reason="needs MEDHARNESS_DATA_DIR")
def test_real_medquad_counts_and_no_leak() -> None:
    assert REAL_DATA is not None
    pairs, digests = load_pairs(REAL_DATA / "medquad")
    assert len(pairs) == 16407
    assert len(digests) == 12
    splits = split_pairs(pairs)
    train = {normalise_question(p.question) for p in splits["train"]}
    assert not any(normalise_question(p.question) in train for p in splits["test"])
    assert 0.09 < len(splits["test"]) / len(pairs) < 0.11


@pytest.mark.skipif(REAL_DATA is None, reason="needs MEDHARNESS_DATA_DIR")
def test_real_medqa_first_test_question() -> None:
    assert REAL_DATA is not None
    sample = get_task("medqa_4opt").load(REAL_DATA / "medqa").samples[0]
    assert sample.prompt.startswith("Question: A junior orthopaedic surgery resident")
    assert sample.target == "B"
    assert len(get_task("medqa_4opt").load(REAL_DATA / "medqa").samples) == 1273
    assert len(get_task("medmcqa").load(REAL_DATA / "medmcqa").samples) == 4183
    assert len(get_task("pubmedqa").load(REAL_DATA / "pubmedqa").samples) == 500
