"""Suites: named sets of tasks reported together with one average, as lm-eval's groups are.

``multimedqa`` is lm-eval's group of that name, the nine tasks of the Open Medical-LLM
Leaderboard (``lm_eval/tasks/benchmarks/multimedqa/multimedqa.yaml``); its ``acc`` is the mean
of the tasks' accuracies weighted by their sizes (``aggregate_metric_list: weight_by_size``),
which is the accuracy over all the suite's questions pooled. A config defines suites of its
own under ``suites:``; naming a suite in ``tasks:`` adds its tasks (those not listed already).
"""

from __future__ import annotations

SUITES: dict[str, tuple[str, ...]] = {
    "multimedqa": (
        "pubmedqa",
        "medmcqa",
        "medqa_4opt",
        "mmlu_anatomy",
        "mmlu_clinical_knowledge",
        "mmlu_college_medicine",
        "mmlu_medical_genetics",
        "mmlu_professional_medicine",
        "mmlu_college_biology",
    ),
}
