"""Functions the lm-eval YAMLs in this folder point at, so that plain lm-eval runs these tasks.

``lm-eval run --include_path tasks/ --tasks medqa_4opt ...`` reads the same files through the
same loaders and prompts as medharness (data root: ``$MEDHARNESS_DATA_DIR``, or ``data_dir``
in ``--metadata``), so its numbers and medharness's are comparable one for one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import datasets

from medharness.tasks import Sample, get_task
from medharness.tasks.medcalc import score_answer
from medharness.tasks.metrics.text import corpus_bleu, has_disclaimer, rouge


def _dataset(
    task_name: str, data_dir: str | None = None, *, with_metadata: bool = False, **_: Any
) -> datasets.DatasetDict:
    root = Path(data_dir or os.environ.get("MEDHARNESS_DATA_DIR", "."))
    task = get_task(task_name)
    samples = task.load(root / task.data_subdir).samples
    rows = [
        {
            "doc_id": s.doc_id,
            "prompt": s.prompt,
            "target": s.target,
            "choices": list(s.choices),
            "gold": -1 if s.gold is None else s.gold,
            # what a task's own scoring reads (MedCalc-Bench's limits), as JSON text
            **({"metadata": json.dumps(dict(s.metadata))} if with_metadata else {}),
        }
        for s in samples
    ]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


# One entry point per task, as lm-eval's `!function module.name` needs a name to point at.
medquad_gen = partial(_dataset, "medquad_gen")
medqa_4opt = partial(_dataset, "medqa_4opt")
medqa_5opt = partial(_dataset, "medqa_5opt")
medqa_mainland = partial(_dataset, "medqa_mainland")
medqa_taiwan = partial(_dataset, "medqa_taiwan")
pubmedqa = partial(_dataset, "pubmedqa")
medmcqa = partial(_dataset, "medmcqa")
mmlu_anatomy = partial(_dataset, "mmlu_anatomy")
mmlu_clinical_knowledge = partial(_dataset, "mmlu_clinical_knowledge")
mmlu_college_biology = partial(_dataset, "mmlu_college_biology")
mmlu_college_medicine = partial(_dataset, "mmlu_college_medicine")
mmlu_medical_genetics = partial(_dataset, "mmlu_medical_genetics")
mmlu_professional_medicine = partial(_dataset, "mmlu_professional_medicine")
medcalc = partial(_dataset, "medcalc", with_metadata=True)


def medquad_process_results(doc: dict[str, Any], results: Sequence[str]) -> dict[str, Any]:
    """Per-document ROUGE and disclaimer, and the (reference, prediction) pair corpus BLEU
    aggregates."""
    prediction = results[0].strip()
    return {
        **rouge(prediction, doc["target"]),
        "bleu": (doc["target"], prediction),
        "disclaimer_rate": has_disclaimer(prediction),
    }


def medcalc_process_results(doc: dict[str, Any], results: Sequence[str]) -> dict[str, float]:
    """MedCalc-Bench's accuracy and invalid_answer, by the same scoring as medharness."""
    sample = Sample(
        doc["doc_id"], doc["prompt"], doc["target"], metadata=json.loads(doc["metadata"])
    )
    return score_answer(sample, results[0]).metrics


def bleu_aggregation(pairs: Sequence[tuple[str, str]]) -> float:
    references, predictions = zip(*pairs, strict=True)
    return corpus_bleu(predictions, references)[0]
