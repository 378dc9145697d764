"""Training examples from the datasets medharness evaluates on, never from their test splits.

MedQuAD: the train split of the leakage-safe 80/10/10 split (``tasks.medquad``), as chat
conversations (question as the user turn, answer as the assistant turn) so the model's own
chat template formats them, as it does at evaluation. The absence of every test question is
checked, not assumed.

MedQA: ``medqa_train`` trains on the US 4-option train split (the release's
``phrases_no_exclude_train.jsonl`` as ``medqa/us_4opt_train.jsonl``, or a hub copy such as
lm-eval's ``GBaker/MedQA-USMLE-4-options-hf``); ``medqa_dev`` on the dev file where no train
split is at hand. Questions that also appear in a test split (normalised text) are dropped
and counted. Examples are in the scoring format (the lm-eval prompt, then the gold letter)
because that is the text the multiple-choice scorer reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medharness.core.errors import UserError
from medharness.core.io import sha256_file
from medharness.tasks.base import Sample
from medharness.tasks.hub_sources import hub_rows, medqa_samples, pinned, source_for
from medharness.tasks.medqa import MEDQA_4OPT, load_medqa_file
from medharness.tasks.medquad import load_pairs, normalise_question, split_pairs


@dataclass(frozen=True)
class TrainingSet:
    examples: list[dict[str, Any]]  # TRL prompt-completion records
    description: str  # one line for logs and the saved training config
    file_hashes: dict[str, str]
    disclaimer: str | None = None  # appended to every answer; must survive truncation


def medquad_examples(
    root: Path, limit: int | None, disclaimer: str | None, split: str = "train"
) -> TrainingSet:
    pairs, digests = load_pairs(root / "medquad")
    splits = split_pairs(pairs)
    chosen = splits[split][:limit] if limit else splits[split]  # type: ignore[index]
    test_questions = {normalise_question(pair.question) for pair in splits["test"]}
    leaked = [p.doc_id for p in chosen if normalise_question(p.question) in test_questions]
    if leaked:  # the split is built to make this impossible; stop rather than train on test
        raise RuntimeError(f"MedQuAD test questions in the training data: {leaked[:5]}")
    examples = [
        {
            "prompt": [{"role": "user", "content": pair.question}],
            "completion": [
                {"role": "assistant", "content": with_disclaimer(pair.answer, disclaimer)}
            ],
        }
        for pair in chosen
    ]
    return TrainingSet(
        examples,
        f"MedQuAD {split} split, {len(examples)} of {len(splits[split])} pairs"  # type: ignore[index]
        + (" (disclaimer appended)" if disclaimer else ""),
        digests,
        disclaimer,
    )


def with_disclaimer(answer: str, disclaimer: str | None) -> str:
    return f"{answer}\n\n{disclaimer}" if disclaimer else answer


def medqa_dev_examples(root: Path, limit: int | None) -> TrainingSet:
    path = root / "medqa" / "us_4opt_dev.jsonl"
    if not path.is_file():
        raise UserError(f"MedQA dev file not found: {path} (needed by data: medqa_dev)")
    return letter_examples(
        load_medqa_file(path, 4),
        MEDQA_4OPT.load(root / "medqa").samples,
        limit,
        "MedQA US 4-option DEV split (evaluate on test)",
        {"medqa/us_4opt_dev.jsonl": sha256_file(path)},
    )


def medqa_train_examples(root: Path, limit: int | None, source: str | None) -> TrainingSet:
    """The train split, from the data root's file or from a hub copy; checked against the
    test split of the same source and, where present, the data root's official test file."""
    official_test = root / "medqa" / "us_4opt_test.jsonl"
    test = MEDQA_4OPT.load(root / "medqa").samples if official_test.is_file() else []
    if source is not None:
        hub = pinned(source_for("medqa_4opt", source, Path.cwd()))
        rows, digest = hub_rows(hub, "train")
        samples, _ = medqa_samples(rows, hub.label)
        test_rows, _ = hub_rows(hub, "test")
        test += medqa_samples(test_rows, hub.label)[0]
        return letter_examples(
            samples, test, limit, f"MedQA US 4-option train split from {hub.label}",
            {f"{hub.label} train": digest},
        )  # fmt: skip
    path = root / "medqa" / "us_4opt_train.jsonl"
    if not path.is_file():
        raise UserError(
            f"MedQA train file not found: {path} (needed by data: medqa_train; copy the "
            "release's questions/US/4_options/phrases_no_exclude_train.jsonl there, or set "
            "source: hub)"
        )
    return letter_examples(
        load_medqa_file(path, 4), test, limit, "MedQA US 4-option train split",
        {"medqa/us_4opt_train.jsonl": sha256_file(path)},
    )  # fmt: skip


def letter_examples(
    samples: list[Sample],
    test: list[Sample],
    limit: int | None,
    what: str,
    file_hashes: dict[str, str],
) -> TrainingSet:
    """Scoring-format examples of the samples whose question no test sample asks."""
    asked = {normalise_question(str(s.metadata.get("question", s.prompt))) for s in test}
    kept = [
        s
        for s in samples
        if normalise_question(str(s.metadata.get("question", s.prompt))) not in asked
    ]
    chosen = kept[:limit] if limit else kept
    examples = [
        {
            "prompt": sample.prompt,
            "completion": MEDQA_4OPT.target_delimiter + sample.choices[sample.gold or 0],
        }
        for sample in chosen
    ]
    dropped = len(samples) - len(kept)
    return TrainingSet(
        examples,
        f"{what}, {len(examples)} of {len(samples)} questions"
        + (f" ({dropped} also in a test split dropped)" if dropped else ""),
        file_hashes,
    )
