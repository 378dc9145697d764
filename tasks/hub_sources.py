"""Built-in tasks read from a hub copy of their dataset, through the ``datasets`` library.

Model cards evaluate on hub copies: ``keivalya/MedQuad-MedicalQnADataset`` (qtype, Question,
Answer; one ``train`` split of 16,412 rows), and lm-eval's own sources for MedQA,
``GBaker/MedQA-USMLE-4-options-hf`` (sent1, ending0-3, label), and MedMCQA,
``openlifescienceai/medmcqa`` (question, opa-opd, 0-based cop; its validation split is the
official dev set), and MMLU, ``cais/mmlu`` (one configuration per subject; question,
choices, 0-based answer), and MedCalc-Bench, ``ncbi/MedCalc-Bench-v1.0`` (the CSV's columns,
its 1,047-row test split). A task entry's ``source:
hub:ORG/NAME@REVISION`` (or a local folder holding such a copy in the hub's layout) reads
those rows and maps them to the task's samples: MedQuAD through the same answered-pairs
filter and the same leakage-safe split by normalised question as the XML release, MedQA
through lm-eval's prompt and option letters. The data's identity in the manifest is the
source's label with the sha256 of its rows, so results from a hub copy and from the official
files are never taken for the same data.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from medharness.core.errors import UserError, boundary
from medharness.core.io import resolve_inside
from medharness.tasks.base import LoadedData, Sample, Task, require_text
from medharness.tasks.medcalc import hub_samples as medcalc_hub_samples
from medharness.tasks.medmcqa import medmcqa_samples
from medharness.tasks.medquad import QAPair, clean_answer, split_pairs, to_sample
from medharness.tasks.mmlu import SUBJECTS, mmlu_sample
from medharness.tasks.multiple_choice import letter_sample, medqa_prompt
from medharness.tasks.pubmedqa import pubmedqa_sample


@dataclass(frozen=True)
class Source:
    location: str  # a hub dataset id, or a local folder
    revision: str | None
    local: bool

    @property
    def label(self) -> str:
        if self.local:
            return f"local:{Path(self.location).name}"
        return f"hub:{self.location}@{self.revision or 'main'}"


def parse_source(text: str, base_dir: Path) -> Source:
    """``hub:ORG/NAME[@REVISION]``, or a path to a local copy in the hub's layout."""
    if text.startswith("hub:"):
        repo, _, revision = text.removeprefix("hub:").partition("@")
        if repo.count("/") != 1 or not all(repo.split("/")):
            raise UserError(f"source {text!r}: expected hub:ORG/NAME[@REVISION]")
        return Source(repo, revision or None, local=False)
    path = resolve_inside(base_dir, text)
    if not path.is_dir():
        raise UserError(f"source {text!r}: neither hub:ORG/NAME nor a folder ({path})")
    return Source(str(path), None, local=True)


def pinned(source: Source) -> Source:
    """A hub source at the commit its revision (``main`` when none) points to now, so the
    manifest records what was read; a local copy as it is."""
    if source.local or (source.revision and len(source.revision) == 40):
        return source
    from huggingface_hub import HfApi

    with boundary(f"cannot resolve the revision of {source.label}"):
        info = HfApi().dataset_info(source.location, revision=source.revision)
    return replace(source, revision=info.sha)


def hub_rows(
    source: Source, split: str, config: str | None = None
) -> tuple[list[dict[str, Any]], str]:
    """The split's rows (of ``config``, where the dataset has several) and the sha256 of
    their content."""
    from datasets import load_dataset

    with boundary(f"cannot read {source.label}"):
        data = load_dataset(source.location, config, revision=source.revision, split=split)
    rows = data.to_list()
    canonical = json.dumps(rows, sort_keys=True, ensure_ascii=False, default=str)
    return rows, hashlib.sha256(canonical.encode()).hexdigest()


def medquad_samples(rows: list[dict[str, Any]], where: str) -> tuple[list[Sample], dict[str, int]]:
    """keivalya's rows as MedQuAD pairs: answered ones only, the test part of the same split."""
    skipped: Counter[str] = Counter()
    pairs = []
    for index, row in enumerate(rows):
        question = str(row.get("Question") or "").strip()
        answer = clean_answer(str(row.get("Answer") or ""))
        if not question:
            skipped["no question"] += 1
        elif not answer:
            skipped["no answer"] += 1
        else:
            pairs.append(
                QAPair(
                    doc_id=f"row{index}", question=question, answer=answer,
                    qtype=str(row.get("qtype") or ""), source=where, folder="", focus="",
                    document_id=str(index),
                )
            )  # fmt: skip
    return [to_sample(pair) for pair in split_pairs(pairs)["test"]], dict(sorted(skipped.items()))


def medqa_samples(rows: list[dict[str, Any]], where: str) -> tuple[list[Sample], dict[str, int]]:
    """GBaker's rows (lm-eval's medqa_4options source) as letter-choice samples."""
    samples = []
    for index, row in enumerate(rows):
        at = f"{where} row {index + 1}"
        question = require_text(row.get("sent1"), at, "sent1")
        options = [require_text(row.get(f"ending{k}"), at, f"ending{k}") for k in range(4)]
        label = row.get("label")
        if not isinstance(label, int) or not 0 <= label < 4:
            raise UserError(f"{at}: label: {label!r} is not an option index 0-3")
        doc_id = str(row.get("id") if row.get("id") is not None else index)
        prompt = medqa_prompt(question, options)
        samples.append(letter_sample(doc_id, prompt, 4, label, {"question": question}))
    return samples, {}


def medmcqa_hub_samples(
    rows: list[dict[str, Any]], where: str
) -> tuple[list[Sample], dict[str, int]]:
    """openlifescienceai/medmcqa (lm-eval's source): 0-based ``cop``, validation split."""
    numbered = ((f"{where} row {index + 1}", row) for index, row in enumerate(rows))
    return medmcqa_samples(numbered, first=0), {}


def pubmedqa_hub_samples(
    rows: list[dict[str, Any]], where: str
) -> tuple[list[Sample], dict[str, int]]:
    """bigbio/pubmed_qa's source schema: the release's fields, with the PMID as ``pubid``."""
    samples = [
        pubmedqa_sample(str(row.get("pubid")), row, f"{where} row {index + 1}")
        for index, row in enumerate(rows)
    ]
    return samples, {}


def mmlu_hub_samples(
    subject: str, rows: list[dict[str, Any]], where: str
) -> tuple[list[Sample], dict[str, int]]:
    """cais/mmlu's rows of one subject (lm-eval's source): ``choices`` a list of four,
    ``answer`` the right one's 0-based index."""
    samples = []
    for index, row in enumerate(rows):
        at = f"{where} row {index + 1}"
        question = require_text(row.get("question"), at, "question")
        choices = row.get("choices")
        if not isinstance(choices, list) or len(choices) != 4:
            raise UserError(f"{at}: choices: expected a list of 4 options, not {choices!r}")
        options = [require_text(text, at, f"choices[{k}]") for k, text in enumerate(choices)]
        answer = row.get("answer")
        if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < 4:
            raise UserError(f"{at}: answer: {answer!r} is not an option index 0-3")
        samples.append(mmlu_sample(subject, str(index), question, options, answer))
    return samples, {}


Mapping = Callable[[list[dict[str, Any]], str], tuple[list[Sample], dict[str, int]]]


@dataclass(frozen=True)
class HubCopy:
    """Where a task's rows sit in the hub copy model cards used, and how they map."""

    repo: str
    split: str
    mapping: Mapping
    config: str | None = None  # the dataset's configuration, where it has several


MAPPINGS: dict[str, HubCopy] = {
    "medquad_gen": HubCopy("keivalya/MedQuad-MedicalQnADataset", "train", medquad_samples),
    "medqa_4opt": HubCopy("GBaker/MedQA-USMLE-4-options-hf", "test", medqa_samples),
    "medmcqa": HubCopy("openlifescienceai/medmcqa", "validation", medmcqa_hub_samples),
    # lm-eval's pubmedqa source: fold 0 of the labelled set, whose test part is the official 500
    "pubmedqa": HubCopy(
        "bigbio/pubmed_qa", "test", pubmedqa_hub_samples, "pubmed_qa_labeled_fold0_source"
    ),
    "medcalc": HubCopy("ncbi/MedCalc-Bench-v1.0", "test", medcalc_hub_samples),
    **{
        f"mmlu_{subject}": HubCopy(
            "cais/mmlu", "test", partial(mmlu_hub_samples, subject), config=subject
        )
        for subject in SUBJECTS
    },
}


def source_for(task_name: str, text: str, base_dir: Path) -> Source:
    """A source of ``task_name``'s rows; ``hub`` names the copy model cards used."""
    if task_name not in MAPPINGS:
        known = ", ".join(f"{name} ({copy.repo})" for name, copy in MAPPINGS.items())
        raise UserError(f"task {task_name}: no hub source is known for it; known: {known}")
    return parse_source(f"hub:{MAPPINGS[task_name].repo}" if text == "hub" else text, base_dir)


def with_source(task: Task, text: str, base_dir: Path) -> Task:
    """``task`` reading its rows from a hub copy instead of the data root (``hub``: the copy
    model cards used)."""
    source = source_for(task.name, text, base_dir)
    return replace(
        task,
        source=source.label,
        summary=f"{task.summary}; rows from {source.label}",
        load=partial(_load, task.name, source),
    )


def _load(name: str, source: Source, folder: Path) -> LoadedData:
    copy = MAPPINGS[name]
    source = pinned(source)
    rows, digest = hub_rows(source, copy.split, copy.config)
    samples, skipped = copy.mapping(rows, source.label)
    return LoadedData(samples, {source.label: digest}, skipped)
