"""The six MMLU medical tasks: the release CSVs and the hub copy give lm-eval's own
``mmlu_<subject>`` prompts, options and answers; bad rows are one line naming file, row and
column."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest
from conftest import MMLU_SUBJECTS, REAL_DATA, cais_mmlu_copy, lm_eval_mmlu_task

from medharness.config import TaskEntry
from medharness.core.errors import UserError
from medharness.tasks import get_task
from medharness.tasks.hub_sources import MAPPINGS, source_for

pytestmark = pytest.mark.usefixtures("offline_datasets")


def test_prompts_options_and_answers_equal_lm_evals_own_mmlu_tasks(
    fixture_data: Path, tmp_path: Path
) -> None:
    copy = cais_mmlu_copy(fixture_data / "mmlu_medical", tmp_path / "cais-mmlu")
    for subject in MMLU_SUBJECTS:
        theirs = lm_eval_mmlu_task(subject, copy)
        task = get_task(f"mmlu_{subject}")
        ours = task.load(fixture_data / "mmlu_medical").samples
        docs = list(theirs.test_docs())
        assert len(ours) == len(docs) == 5
        assert theirs.config.target_delimiter == task.target_delimiter
        for sample, doc in zip(ours, docs, strict=True):
            assert sample.prompt == theirs.fewshot_context(doc, 0)
            assert list(sample.choices) == theirs.doc_to_choice(doc)
            assert sample.gold == theirs.doc_to_target(doc)


def test_the_hub_copy_gives_the_release_samples(fixture_data: Path, tmp_path: Path) -> None:
    copy = cais_mmlu_copy(fixture_data / "mmlu_medical", tmp_path / "cais-mmlu")
    for subject in MMLU_SUBJECTS:
        name = f"mmlu_{subject}"
        hub = TaskEntry.model_validate({"name": name, "source": str(copy)}).task(tmp_path)
        loaded = hub.load(tmp_path)
        release = get_task(name).load(fixture_data / "mmlu_medical").samples
        assert [(s.doc_id, s.prompt, s.choices, s.gold) for s in loaded.samples] == [
            (s.doc_id, s.prompt, s.choices, s.gold) for s in release
        ]
        assert list(loaded.file_hashes) == ["local:cais-mmlu"]


def test_source_hub_names_cais_mmlu_with_one_configuration_per_subject() -> None:
    for subject in MMLU_SUBJECTS:
        copy = MAPPINGS[f"mmlu_{subject}"]
        assert (copy.repo, copy.config, copy.split) == ("cais/mmlu", subject, "test")
        assert source_for(f"mmlu_{subject}", "hub", Path.cwd()).label == "hub:cais/mmlu@main"


GOOD = ["Which bone?", "a", "b", "c", "d", "B"]
BAD_ROWS = {  # what the second row is -> what the one line says after "<file>:row 2: "
    "five cells": (GOOD[:5], "expected 6 columns (question, A, B, C, D, answer), found 5"),
    "seven cells": ([*GOOD, "x"], "expected 6 columns (question, A, B, C, D, answer), found 7"),
    "empty question": (["  ", *GOOD[1:]], "question: must be non-empty text"),
    "empty option": ([*GOOD[:3], "", *GOOD[4:]], "C: must be non-empty text"),
    "lower-case gold": ([*GOOD[:5], "b"], "answer: 'b' is not one of the option letters"),
    "no gold": ([*GOOD[:5], ""], "answer: '' is not one of the option letters"),
    "two letters": ([*GOOD[:5], "AB"], "answer: 'AB' is not one of the option letters"),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_a_bad_row_is_one_line_naming_file_row_and_column(case: str, tmp_path: Path) -> None:
    row, message = BAD_ROWS[case]
    path = tmp_path / "anatomy_test.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([GOOD, row])
    with pytest.raises(UserError) as caught:
        get_task("mmlu_anatomy").load(tmp_path)
    assert str(caught.value).startswith(f"{path}:row 2: {message}")
    assert "\n" not in str(caught.value)


def test_rows_are_counted_as_records_and_bad_bytes_as_lines(tmp_path: Path) -> None:
    path = tmp_path / "anatomy_test.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["Two\nlines?", *GOOD[1:]], [*GOOD[:5], "E"]])
    with pytest.raises(UserError, match=r"anatomy_test\.csv:row 2: answer: 'E'"):
        get_task("mmlu_anatomy").load(tmp_path)
    path.write_bytes(b"Which bone?,a,b,c,d,A\nWhich \xff?,a,b,c,d,A\n")
    with pytest.raises(UserError, match=r"anatomy_test\.csv:2: not UTF-8 text"):
        get_task("mmlu_anatomy").load(tmp_path)


# The release's question counts and gold letters (A/B/C/D) per subject, as its source lists them
RELEASE = {
    "anatomy": (25, 34, 45, 31),
    "clinical_knowledge": (57, 71, 58, 79),
    "college_biology": (37, 32, 37, 38),
    "college_medicine": (36, 36, 43, 58),
    "medical_genetics": (30, 26, 20, 24),
    "professional_medicine": (50, 55, 45, 122),
}


@pytest.mark.skipif(REAL_DATA is None, reason="needs MEDHARNESS_DATA_DIR")
def test_the_real_release_has_its_documented_sizes_and_answers() -> None:
    assert REAL_DATA is not None
    for subject, letters in RELEASE.items():
        samples = get_task(f"mmlu_{subject}").load(REAL_DATA / "mmlu_medical").samples
        counts = Counter(sample.target for sample in samples)
        assert tuple(counts[letter] for letter in "ABCD") == letters, subject
