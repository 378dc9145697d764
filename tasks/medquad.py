"""MedQuAD free-text generation: answer a consumer-health question, scored against NIH text.

Dataset: the official MedQuAD XML release (12 folders of ``Document`` files with ``QAPairs``).
Paper: Ben Abacha and Demner-Fushman, "A Question-Entailment Approach to Question Answering",
BMC Bioinformatics 20:511, 2019, doi:10.1186/s12859-019-3119-4. License: CC BY 4.0.

Of 47,441 pairs 16,407 have an answer (three MedlinePlus folders are empty upstream for
copyright); the loader keeps only answered pairs. Many questions repeat ("What is (are)
X ?"), so the 80/10/10 split assigns whole groups of identical normalised question text to
one split by a seeded hash: no test question is ever seen in train. Evaluation uses ``test``.

Prompt: the question alone as the user turn of the model's own chat template (what model
cards on this dataset do). Metrics: ROUGE-1/2/L/Lsum F-measure averaged over samples
(rouge_score, default tokenizer, no stemmer: the settings of HF ``evaluate``'s rouge that
model cards report) and sacrebleu corpus BLEU (0-100, default settings, signature recorded);
``disclaimer_rate``, the share of answers carrying a safety disclaimer (a phrase match, see
``tasks.metrics.DISCLAIMER_PATTERN``), measures what disclaimer-injected training did.
"""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from medharness.core.errors import UserError
from medharness.tasks.base import LoadedData, Sample, Task

VERSION = "2"  # 2: adds disclaimer_rate
SPLIT_SEED = 20240101
SPLIT_FRACTIONS = (0.8, 0.1)  # train, validation; test takes the rest
Split = Literal["train", "validation", "test"]
OBTAIN = (
    "MedQuAD: clone https://github.com/abachaa/MedQuAD (or download its archive) into medquad/ "
    "so that medquad/1_CancerGov_QA/*.xml exists"
)


@dataclass(frozen=True)
class QAPair:
    doc_id: str
    question: str
    answer: str
    qtype: str
    source: str
    folder: str
    focus: str
    document_id: str


def normalise_question(text: str) -> str:
    """Lower case, punctuation to spaces, whitespace collapsed: the key that groups repeats."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text.lower()).split())


def clean_answer(text: str) -> str:
    """Strip the XML's indentation: one stripped line per non-empty line."""
    return "\n".join(line.strip() for line in text.splitlines() if line.strip())


def parse_document(path: Path, skipped: Counter[str]) -> list[QAPair]:
    """The document's answered pairs; those left out are counted in ``skipped`` by reason."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise UserError(f"{path}: not valid XML ({exc})") from None
    folder = path.parent.name
    source = root.get("source", folder)
    document_id = root.get("id", path.stem)
    focus = (root.findtext("Focus") or "").strip()
    pairs = []
    for position, pair in enumerate(root.iter("QAPair"), start=1):
        question = pair.find("Question")
        answer = clean_answer(pair.findtext("Answer") or "")
        if question is None or not (question.text or "").strip():
            skipped["no question"] += 1
            continue
        if not answer:  # three MedlinePlus folders by upstream design
            skipped["no answer"] += 1
            continue
        pairs.append(
            QAPair(
                # qids repeat across some CancerGov files; file name + position never does
                doc_id=f"{folder}/{path.stem}#{position}",
                question=(question.text or "").strip(),
                answer=answer,
                qtype=question.get("qtype", ""),
                source=source,
                folder=folder,
                focus=focus,
                document_id=document_id,
            )
        )
    return pairs


def load_pairs(
    root: Path, skipped: Counter[str] | None = None
) -> tuple[list[QAPair], dict[str, str]]:
    """Every answered pair under ``root``, and one sha256 per folder over its files' sha256s.

    The folder digest is the sha256 of ``"<sha256>  ./<folder>/<file>\\n"`` lines in name
    order, the layout of the release's SHA256SUMS, so it can be checked against that file.
    """
    files = sorted(root.glob("*/*.xml"))
    if not files:
        raise UserError(f"MedQuAD not found: no */*.xml under {root}. {OBTAIN}")
    pairs: list[QAPair] = []
    listings: dict[str, list[str]] = {}
    for path in files:
        data = path.read_bytes()
        listings.setdefault(path.parent.name, []).append(
            f"{hashlib.sha256(data).hexdigest()}  ./{path.parent.name}/{path.name}\n"
        )
        pairs.extend(parse_document(path, Counter() if skipped is None else skipped))
    digests = {
        f"medquad/{folder}/ ({len(lines)} files)": hashlib.sha256(
            "".join(lines).encode()
        ).hexdigest()
        for folder, lines in listings.items()
    }
    return pairs, digests


def split_of(question: str, seed: int = SPLIT_SEED) -> Split:
    """Deterministic split of a question, decided by its normalised text alone."""
    position = _hash_unit(normalise_question(question), seed)
    if position < SPLIT_FRACTIONS[0]:
        return "train"
    if position < SPLIT_FRACTIONS[0] + SPLIT_FRACTIONS[1]:
        return "validation"
    return "test"


def split_pairs(pairs: list[QAPair], seed: int = SPLIT_SEED) -> dict[Split, list[QAPair]]:
    """80/10/10 by normalised question; each split in a seeded shuffled (but stable) order."""
    splits: dict[Split, list[QAPair]] = {"train": [], "validation": [], "test": []}
    for pair in pairs:
        splits[split_of(pair.question, seed)].append(pair)
    for members in splits.values():
        members.sort(key=lambda pair: (_hash_unit(pair.doc_id, seed), pair.doc_id))
    return splits


def _hash_unit(text: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def to_sample(pair: QAPair) -> Sample:
    return Sample(
        doc_id=pair.doc_id,
        prompt=pair.question,
        target=pair.answer,
        metadata={
            "qtype": pair.qtype,
            "source": pair.source,
            "folder": pair.folder,
            "focus": pair.focus,
            "document_id": pair.document_id,
        },
    )


def load_split(root: Path, split: Split = "test") -> LoadedData:
    skipped: Counter[str] = Counter()
    pairs, digests = load_pairs(root, skipped)
    samples = [to_sample(pair) for pair in split_pairs(pairs)[split]]
    return LoadedData(samples, digests, dict(sorted(skipped.items())))


def _load_test(root: Path) -> LoadedData:
    return load_split(root, "test")


MEDQUAD_GEN = Task(
    name="medquad_gen",
    version=VERSION,
    kind="generate",
    summary="MedQuAD answered pairs, leakage-safe 80/10/10 split, test; ROUGE and BLEU",
    data_subdir="medquad",
    obtain_hint=OBTAIN,
    load=_load_test,
    metric_names=("rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "disclaimer_rate"),
    prompt_template="{question} (as the user turn of the model's chat template)",
    breakdown_keys=("qtype", "source"),
)
