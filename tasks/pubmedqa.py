"""PubMedQA (PQA-L): yes/no/maybe questions answered from a PubMed abstract.

Dataset: the expert-labelled subset, official 500-item test split ``pubmedqa/test_set.json``
(PMID -> QUESTION, CONTEXTS, final_decision, ...). Paper: Jin, Dhingra, Liu, Cohen, Lu,
"PubMedQA: A Dataset for Biomedical Research Question Answering", EMNLP-IJCNLP 2019,
arXiv:1909.06146. License: MIT.

Scoring: lm-eval's ``pubmedqa`` prompt ("Abstract: <contexts>\\nQuestion: ...\\nAnswer:") and
log-likelihood of " yes", " no", " maybe"; metric ``acc``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medharness.core.errors import UserError
from medharness.core.io import sha256_file
from medharness.tasks.base import LoadedData, Sample, Task, require_text

VERSION = "1"
FILE_NAME = "test_set.json"
LABELS = ("yes", "no", "maybe")
OBTAIN = (
    "PubMedQA: run preprocess/split_dataset.py pqal from https://github.com/pubmedqa/pubmedqa "
    "and copy its test_set.json to pubmedqa/test_set.json"
)


def pubmedqa_prompt(contexts: list[str], question: str) -> str:
    return "Abstract: {}\nQuestion: {}\nAnswer:".format("\n".join(contexts), question)


class DuplicateKey(ValueError):
    """A key that appears twice in one JSON object (json.loads would keep the last)."""


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise DuplicateKey(key)
        seen[key] = value
    return seen


def load_pubmedqa_file(path: Path) -> list[Sample]:
    try:
        entries = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=unique_keys)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    except DuplicateKey as exc:
        raise UserError(f"{path}: PMID {exc.args[0]} appears twice") from None
    if not isinstance(entries, dict):
        raise UserError(f"{path}: expected a JSON object keyed by PMID")
    return [
        pubmedqa_sample(str(pmid), entry, f"{path}: PMID {pmid}") for pmid, entry in entries.items()
    ]


def pubmedqa_sample(pmid: str, entry: Any, where: str) -> Sample:
    """One PQA-L entry (QUESTION, CONTEXTS, final_decision, YEAR: the release's fields, which
    the hub copies keep) as a yes/no/maybe sample."""
    if not isinstance(entry, dict):
        raise UserError(f"{where}: expected an object")
    question = require_text(entry.get("QUESTION"), where, "QUESTION")
    contexts = entry.get("CONTEXTS")
    if not isinstance(contexts, list) or not all(isinstance(c, str) for c in contexts):
        raise UserError(f"{where}: CONTEXTS: must be a list of texts")
    decision = entry.get("final_decision")
    if decision not in LABELS:
        raise UserError(f"{where}: final_decision: {decision!r} is not yes, no or maybe")
    gold = LABELS.index(decision)
    return Sample(
        doc_id=pmid,
        prompt=pubmedqa_prompt(contexts, question),
        target=LABELS[gold],
        choices=LABELS,
        gold=gold,
        metadata={"question": question, "year": entry.get("YEAR", "")},
    )


def _load(root: Path) -> LoadedData:
    path = root / FILE_NAME
    if not path.is_file():
        raise UserError(f"PubMedQA file not found: {path}. {OBTAIN}")
    return LoadedData(load_pubmedqa_file(path), {f"pubmedqa/{FILE_NAME}": sha256_file(path)})


PUBMEDQA = Task(
    name="pubmedqa",
    version=VERSION,
    kind="multiple_choice",
    summary="PubMedQA PQA-L test (500), yes/no/maybe (lm-eval pubmedqa prompt)",
    data_subdir="pubmedqa",
    obtain_hint=OBTAIN,
    load=_load,
    metric_names=("acc",),
    prompt_template="Abstract: {contexts}\nQuestion: {question}\nAnswer:",
)
