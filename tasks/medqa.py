"""MedQA: multiple-choice questions from medical licensing exams (US, Mainland China, Taiwan).

Dataset: MedQA ``data_clean/questions`` release (JSON Lines: question, options, answer,
answer_idx, meta_info). Paper: Jin et al., "What Disease Does This Patient Have? A Large-Scale
Open Domain Question Answering Dataset from Medical Exams", Applied Sciences 11(14):6421, 2021,
arXiv:2009.13081. License: MIT (Copyright (c) 2022 Di Jin).

Scoring: log-likelihood of each option letter after lm-eval's ``medqa_4options`` prompt
("Question: ...\\nA. ...\\nB. ...\\nAnswer:"), continuation " A", " B", ...; the highest
wins; metric ``acc``. The same English scaffold is used for the Chinese variants.

Variants (test split; no train split is available here):
- ``medqa_4opt``: USMLE, 4 options (``us_4opt_test.jsonl``), lm-eval's ``medqa_4options``.
- ``medqa_5opt``: USMLE, the original 5 options (``us_5opt_test.jsonl``).
- ``medqa_mainland``: MCMLE, simplified Chinese, 4 options (``mainland_4opt_test.jsonl``).
- ``medqa_taiwan``: TWMLE, traditional Chinese, 4 options (``taiwan_test.jsonl``).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from medharness.core.errors import UserError
from medharness.core.io import read_jsonl, sha256_file
from medharness.tasks.base import LoadedData, Sample, Task, require_text
from medharness.tasks.multiple_choice import LETTERS, letter_sample, medqa_prompt

VERSION = "1"
OBTAIN = (
    "MedQA: download data_clean.zip linked from https://github.com/jind11/MedQA and copy "
    "data_clean/questions/US/4_options/phrases_no_exclude_test.jsonl to medqa/us_4opt_test.jsonl "
    "(see the medharness README, 'Data', for every file name)"
)


def load_medqa_file(path: Path, n_options: int) -> list[Sample]:
    """Read one MedQA JSONL file into letter-choice samples; check every record's answer."""
    samples = []
    letters = LETTERS[:n_options]
    for index, row in enumerate(read_jsonl(path)):
        where = f"{path}:{index + 1}"
        try:
            options = [
                require_text(row["options"][letter], where, f"options.{letter}")
                for letter in letters
            ]
        except (KeyError, TypeError) as exc:
            raise UserError(f"{where}: options: missing or bad ({exc})") from None
        question = require_text(row.get("question"), where, "question")
        answer_idx = row.get("answer_idx")
        if not (isinstance(answer_idx, str) and len(answer_idx) == 1 and answer_idx in letters):
            raise UserError(
                f"{where}: answer_idx: {answer_idx!r} is not one of the option letters "
                f"{', '.join(letters)}"
            )
        gold = letters.index(answer_idx)
        answer = row.get("answer")
        if answer is not None and str(answer).strip() != options[gold].strip():
            raise UserError(
                f"{where}: answer: {str(answer)[:60]!r} is not option {answer_idx} "
                f"({options[gold][:60]!r})"
            )
        samples.append(
            letter_sample(
                doc_id=str(index),
                prompt=medqa_prompt(question, options),
                n_options=n_options,
                gold=gold,
                metadata={"meta_info": row.get("meta_info", ""), "question": question},
            )
        )
    return samples


def _load(file_name: str, n_options: int, root: Path) -> LoadedData:
    path = root / file_name
    if not path.is_file():
        raise UserError(f"MedQA file not found: {path}. {OBTAIN}")
    return LoadedData(
        samples=load_medqa_file(path, n_options),
        file_hashes={f"medqa/{file_name}": sha256_file(path)},
    )


def _medqa_task(name: str, file_name: str, n_options: int, summary: str) -> Task:
    return Task(
        name=name,
        version=VERSION,
        kind="multiple_choice",
        summary=summary,
        data_subdir="medqa",
        obtain_hint=OBTAIN,
        load=partial(_load, file_name, n_options),
        metric_names=("acc",),
        prompt_template="Question: {question}\n{A. option ...}Answer:",
        breakdown_keys=("meta_info",),
    )


MEDQA_4OPT = _medqa_task(
    "medqa_4opt", "us_4opt_test.jsonl", 4, "MedQA USMLE test, 4 options (lm-eval medqa_4options)"
)
MEDQA_5OPT = _medqa_task("medqa_5opt", "us_5opt_test.jsonl", 5, "MedQA USMLE test, 5 options")
MEDQA_MAINLAND = _medqa_task(
    "medqa_mainland", "mainland_4opt_test.jsonl", 4, "MedQA Mainland (MCMLE) test, 4 options"
)
MEDQA_TAIWAN = _medqa_task(
    "medqa_taiwan", "taiwan_test.jsonl", 4, "MedQA Taiwan (TWMLE) test, 4 options"
)
