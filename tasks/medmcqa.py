"""MedMCQA: Indian medical entrance exam (AIIMS/NEET PG) multiple-choice questions.

Dataset: the official dev (validation) set, ``medmcqa/dev.jsonl`` (fields question, opa..opd,
cop 1-based, subject_name, topic_name, id, choice_type); the test set has no public answers,
so, like lm-eval's ``medmcqa``, the dev set is the evaluation split. Paper: Pal, Umapathi,
Sankarasubbu, "MedMCQA: A Large-scale Multi-Subject Multi-Choice Dataset for Medical domain
Question Answering", CHIL 2022, PMLR 174:248-260, arXiv:2203.14371. License: MIT.

Scoring: lm-eval's ``medmcqa`` prompt ("Question: ...\\nChoices:\\nA. ...\\nAnswer:") and
log-likelihood of the letters; metric ``acc``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from medharness.core.errors import UserError
from medharness.core.io import read_jsonl, sha256_file
from medharness.tasks.base import LoadedData, Sample, Task, require_text
from medharness.tasks.multiple_choice import letter_sample, medmcqa_prompt

VERSION = "1"
FILE_NAME = "dev.jsonl"
OPTION_COLUMNS = ("opa", "opb", "opc", "opd")
OBTAIN = (
    "MedMCQA: download the dev set (dev.json, JSON Lines) from https://github.com/medmcqa/medmcqa "
    "and save it as medmcqa/dev.jsonl"
)


def load_medmcqa_file(path: Path) -> list[Sample]:
    return medmcqa_samples(
        ((f"{path}:{index + 1}", row) for index, row in enumerate(read_jsonl(path))), first=1
    )


def medmcqa_samples(rows: Iterable[tuple[str, dict[str, Any]]], first: int) -> list[Sample]:
    """Samples from (where, row) pairs; ``cop`` counts options from ``first``: this release
    from 1, the hub copy (openlifescienceai/medmcqa) from 0."""
    samples = []
    valid = [first + k for k in range(4)]
    for index, (where, row) in enumerate(rows):
        options = [require_text(row.get(column), where, column) for column in OPTION_COLUMNS]
        question = require_text(row.get("question"), where, "question")
        cop = row.get("cop")
        if isinstance(cop, bool) or cop not in [*valid, *map(str, valid)]:
            allowed = ", ".join(map(str, valid[:-1])) + f" or {valid[-1]}"
            raise UserError(f"{where}: cop: {cop!r} is not {allowed}")
        gold = int(str(cop)) - first
        samples.append(
            letter_sample(
                doc_id=str(row.get("id", index)),
                prompt=medmcqa_prompt(question, options),
                n_options=4,
                gold=gold,
                metadata={
                    "subject": row.get("subject_name") or "",
                    "topic": row.get("topic_name") or "",
                    "choice_type": row.get("choice_type") or "",
                    "question": question,
                },
            )
        )
    return samples


def _load(root: Path) -> LoadedData:
    path = root / FILE_NAME
    if not path.is_file():
        raise UserError(f"MedMCQA file not found: {path}. {OBTAIN}")
    return LoadedData(load_medmcqa_file(path), {f"medmcqa/{FILE_NAME}": sha256_file(path)})


MEDMCQA = Task(
    name="medmcqa",
    version=VERSION,
    kind="multiple_choice",
    summary="MedMCQA dev set, 4 options (lm-eval medmcqa prompt)",
    data_subdir="medmcqa",
    obtain_hint=OBTAIN,
    load=_load,
    metric_names=("acc",),
    prompt_template="Question: {question}\nChoices:\n{A. option ...}Answer:",
    breakdown_keys=("subject",),
)
