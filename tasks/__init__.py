"""Benchmarks: one module each, and this explicit registry of them (no import-time magic)."""

from __future__ import annotations

from medharness.core.errors import UserError
from medharness.tasks.base import LoadedData, Sample, Task
from medharness.tasks.healthbench import HEALTHBENCH_TASKS
from medharness.tasks.medcalc import MEDCALC
from medharness.tasks.medmcqa import MEDMCQA
from medharness.tasks.medqa import MEDQA_4OPT, MEDQA_5OPT, MEDQA_MAINLAND, MEDQA_TAIWAN
from medharness.tasks.medquad import MEDQUAD_GEN
from medharness.tasks.mmlu import MMLU_TASKS
from medharness.tasks.pubmedqa import PUBMEDQA

TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        MEDQUAD_GEN,
        MEDQA_4OPT,
        MEDQA_5OPT,
        MEDQA_MAINLAND,
        MEDQA_TAIWAN,
        PUBMEDQA,
        MEDMCQA,
        *MMLU_TASKS,
        MEDCALC,
        *HEALTHBENCH_TASKS,
    )
}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise UserError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}") from None


__all__ = ["TASKS", "LoadedData", "Sample", "Task", "get_task"]
