"""Training examples from the datasets medharness evaluates on, never from their test splits.

MedQuAD: the train split of the leakage-safe 80/10/10 split (``tasks.medquad``), as chat
conversations (question as the user turn, answer as the assistant turn) so the model's own
chat template formats them, as it does at evaluation. The absence of every test question is
checked, not assumed.

MedQA: only dev and test files exist here, so ``medqa_dev`` trains on the US 4-option dev
file and the MedQA tasks evaluate on test. Examples are in the scoring format (the lm-eval
prompt, then the gold letter) because that is the text the multiple-choice scorer reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medharness.core.errors import UserError
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
    from medharness.core.io import sha256_file

    path = root / "medqa" / "us_4opt_dev.jsonl"
    if not path.is_file():
        raise UserError(f"MedQA dev file not found: {path} (needed by data: medqa_dev)")
    samples = load_medqa_file(path, 4)
    test = MEDQA_4OPT.load(root / "medqa").samples
    test_prompts = {sample.prompt for sample in test}
    kept = [sample for sample in samples if sample.prompt not in test_prompts]
    chosen = kept[:limit] if limit else kept
    assert all(sample.gold is not None for sample in chosen)
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
        f"MedQA US 4-option DEV split (no train split available; evaluate on test), "
        f"{len(examples)} of {len(samples)} questions"
        + (f" ({dropped} also in test dropped)" if dropped else ""),
        {"medqa/us_4opt_dev.jsonl": sha256_file(path)},
    )
