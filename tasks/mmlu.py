"""MMLU, the six medical subjects of the Open Medical-LLM Leaderboard.

Dataset: the test split of each subject in the original MMLU release layout,
``mmlu_medical/<subject>_test.csv`` (no header; question, options A-D, gold letter). Paper:
Hendrycks, Burns, Basart, Zou, Mazeika, Song, Steinhardt, "Measuring Massive Multitask
Language Understanding", ICLR 2021, arXiv:2009.03300. License: MIT.

Scoring: lm-eval's ``mmlu_<subject>`` default zero-shot task: the subject's description line
("The following are multiple choice questions (with answers) about <subject>.\\n\\n"), then
"<question>\\nA. ...\\nD. ...\\nAnswer:", and the log-likelihood of " A" .. " D"; metric ``acc``.
The six tasks differ only in their subject.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from functools import partial
from pathlib import Path

from medharness.core.errors import UserError
from medharness.core.io import sha256_file
from medharness.tasks.base import LoadedData, Sample, Task, require_text
from medharness.tasks.multiple_choice import LETTERS, letter_sample, options_block

VERSION = "1"
DATA_SUBDIR = "mmlu_medical"
SUBJECTS = (
    "anatomy",
    "clinical_knowledge",
    "college_biology",
    "college_medicine",
    "medical_genetics",
    "professional_medicine",
)
COLUMNS = ("question", "A", "B", "C", "D", "answer")
OBTAIN = (
    "MMLU: `medharness data pull mmlu_medical`, or copy data/test/<subject>_test.csv of the "
    "MMLU release (https://github.com/hendrycks/test) for the six medical subjects to "
    "mmlu_medical/"
)


def description(subject: str) -> str:
    """The line lm-eval's ``mmlu_<subject>`` puts before every question."""
    return (
        "The following are multiple choice questions (with answers) about "
        f"{subject.replace('_', ' ')}.\n\n"
    )


def mmlu_prompt(subject: str, question: str, options: Sequence[str]) -> str:
    """lm-eval's ``mmlu`` default template: the description, the stripped question, the
    options as ``A. ...`` lines, ``Answer:``."""
    return f"{description(subject)}{question.strip()}\n{options_block(options)}Answer:"


def mmlu_sample(subject: str, doc_id: str, question: str, options: list[str], gold: int) -> Sample:
    return letter_sample(
        doc_id=doc_id,
        prompt=mmlu_prompt(subject, question, options),
        n_options=4,
        gold=gold,
        metadata={"subject": subject, "question": question},
    )


def csv_rows(path: Path) -> Iterable[tuple[str, list[str]]]:
    """(``file:row N``, cells) per record of a headerless CSV; quoted fields may hold
    newlines, so rows are counted as records, not lines."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad_line = data[: exc.start].count(b"\n") + 1
        raise UserError(f"{path}:{bad_line}: not UTF-8 text") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        for number, cells in enumerate(reader, start=1):
            yield f"{path}:row {number}", cells
    except csv.Error as exc:
        raise UserError(f"{path}:line {reader.line_num}: not valid CSV ({exc})") from None


def load_mmlu_file(path: Path, subject: str) -> list[Sample]:
    """One subject's release CSV as letter-choice samples; every row's cells checked."""
    samples = []
    for index, (where, cells) in enumerate(csv_rows(path)):
        if len(cells) != len(COLUMNS):
            raise UserError(
                f"{where}: expected {len(COLUMNS)} columns ({', '.join(COLUMNS)}), "
                f"found {len(cells)}"
            )
        named = dict(zip(COLUMNS, cells, strict=True))
        question = require_text(named["question"], where, "question")
        options = [require_text(named[letter], where, letter) for letter in LETTERS[:4]]
        answer = named["answer"]
        if answer not in tuple(LETTERS[:4]):
            raise UserError(
                f"{where}: answer: {answer!r} is not one of the option letters A, B, C, D"
            )
        samples.append(mmlu_sample(subject, str(index), question, options, LETTERS.index(answer)))
    return samples


def file_name(subject: str) -> str:
    return f"{subject}_test.csv"


def _load(subject: str, root: Path) -> LoadedData:
    path = root / file_name(subject)
    if not path.is_file():
        raise UserError(f"MMLU file not found: {path}. {OBTAIN}")
    return LoadedData(
        samples=load_mmlu_file(path, subject),
        file_hashes={f"{DATA_SUBDIR}/{file_name(subject)}": sha256_file(path)},
    )


def mmlu_task(subject: str) -> Task:
    words = subject.replace("_", " ")
    return Task(
        name=f"mmlu_{subject}",
        version=VERSION,
        kind="multiple_choice",
        summary=f"MMLU {words} test, 4 options (lm-eval mmlu_{subject}, zero-shot)",
        data_subdir=DATA_SUBDIR,
        obtain_hint=OBTAIN,
        load=partial(_load, subject),
        metric_names=("acc",),
        prompt_template=(
            f"The following are multiple choice questions (with answers) about {words}.\n\n"
            "{question}\n{A. option ...}Answer:"
        ),
    )


MMLU_TASKS = tuple(mmlu_task(subject) for subject in SUBJECTS)
