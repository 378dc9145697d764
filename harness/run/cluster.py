"""The Ray executor: every pending (model, task) scored as units on a Ray cluster
(``medharness.ray_executor``). This process appends each unit's rows to the pair's partial
log as they come, so a run killed here resumes without them, keeps a record of each unit,
and writes each log once it is whole."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medharness.config import ModelEntry
from medharness.core.events import Event
from medharness.core.io import append_jsonl_durable
from medharness.core.records import UnitRecord
from medharness.evaluate import ChoiceScoring
from medharness.models.specs import absolute_spec
from medharness.ray_executor import Cluster, ModelWork, Scoring, TaskWork, pack
from medharness.run.logs import PartialLog
from medharness.run.plan import Pending, PreparedTask, weights_of


class RayExecutor:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def score(self, pending: Pending) -> Iterator[Event]:
        logs: dict[tuple[str, str], tuple[PreparedTask, PartialLog]] = {}
        work = []
        for entry in pending.config.models:
            tasks = []
            for item in pending.of(entry):
                log = PartialLog(pending.run_dir, entry.name, item.task.name)
                if log.whole(item.samples):  # killed before the finished log was written
                    log.finish(item.samples)
                    continue
                logs[entry.name, item.task.name] = (item, log)
                tasks.append(TaskWork(item.task, item.samples, frozenset(log.done)))
            if tasks:
                work.append(model_work(entry, tasks, pending))

        def keep(unit: UnitRecord, rows: list[dict[str, Any]]) -> None:
            """A unit's rows appended to its pair's partial log, its record to the run's."""
            item, log = logs[unit.model, unit.task]
            log.append(rows)
            append_jsonl_durable(pending.run_dir.units, [unit.model_dump(mode="json")])
            if log.whole(item.samples):
                log.finish(item.samples)

        yield from self.cluster.score(work, keep)


def model_work(entry: ModelEntry, tasks: list[TaskWork], pending: Pending) -> ModelWork:
    """An entry's pending tasks with the weights to load; those the run trained (only this
    machine has them) packed to travel with the work."""
    spec, adapter = weights_of(entry, pending.trained)
    spec, adapter = absolute_spec(spec), absolute_spec(adapter) if adapter else None
    staging = pending.run_dir.path
    trained_here = [path for path in (spec, adapter) if path and Path(path).is_relative_to(staging)]
    shipped = {path: pack(Path(path)) for path in trained_here}
    generation = pending.config.generation
    scoring = Scoring(
        generation.max_new_tokens,
        ChoiceScoring.of(entry, generation),
        generation.cot_max_new_tokens,
        entry.sampling,
    )
    return ModelWork(entry, spec, adapter, tasks, scoring, shipped)
