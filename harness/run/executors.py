"""Where the models run. An executor takes the pending work and scores it, writing each
sample log through ``logs.PartialLog``, and tells the runner what happened as typed events
(``core.events``): a model loaded (how its backend describes it) and a unit of a task scored
(its seconds).

The local executor scores in this process, or in each process of a launcher (accelerate,
torchrun): every process takes its share of each task's chunks and rank 0 gathers the rows.
Entries that can share one loaded base are served by one engine, each adapter swapped in
turn. The Ray executor is in ``cluster.py``.
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Iterator
from typing import Any, Protocol

from medharness.config import ModelEntry
from medharness.core.distributed import gather_on_main, process_count, process_rank
from medharness.core.events import Event, ModelLoaded, UnitDone
from medharness.evaluate import (
    ChoiceScoring,
    close_engine,
    evaluate_chunks,
    load_entry,
    shard,
    shared_base_key,
)
from medharness.models.loading import swap_adapter
from medharness.run.logs import PartialLog
from medharness.run.plan import Pending, PreparedTask, weights_of
from medharness.run.state import JsonRow


class Executor(Protocol):
    def score(self, pending: Pending) -> Iterator[Event]:
        """Score every pending (model, task), yielding what happens as it happens."""
        ...


class LocalExecutor:
    """Models loaded in this process (each process of a launch) and scored in turn."""

    def score(self, pending: Pending) -> Iterator[Event]:
        for group in shared_bases(pending):
            yield from score_group(group, pending)


def shared_bases(pending: Pending) -> list[list[ModelEntry]]:
    """The entries with work left, those that can share one loaded base together (in the
    order of their first entry), each other alone."""
    config = pending.config
    groups: dict[str, list[ModelEntry]] = {}
    for entry in config.models:
        if not pending.tasks[entry.name]:
            continue
        spec = weights_of(entry, pending.trained)[0]
        key = shared_base_key(entry, spec) if config.share_base_models else None
        if key is None:
            key = "\0alone:" + entry.name
        groups.setdefault(key, []).append(entry)
    return list(groups.values())


def score_group(entries: list[ModelEntry], pending: Pending) -> Iterator[Event]:
    """Entries that share a base served by one engine, each adapter swapped in turn; a
    backend that cannot swap loads each anew."""
    model: Any = None
    weights = [weights_of(entry, pending.trained) for entry in entries]
    for index, (entry, (spec, adapter)) in enumerate(zip(entries, weights, strict=True)):
        clock = time.time()
        swapped = None if model is None else swap_adapter(model, adapter, entry.allow_pickle)
        if swapped is None:
            if model is not None:
                close_engine(model)
                del model
                gc.collect()
            print(
                f"[{entry.name}] loading {spec}" + (f" + {adapter}" if adapter else ""),
                file=sys.stderr,
            )
            later_adapters = [later for _, later in weights[index + 1 :]]
            model = load_entry(entry, spec, adapter, later_adapters=later_adapters)
        else:
            served = f"adapter {adapter}" if adapter else "no adapter"
            print(f"[{entry.name}] {spec} already loaded: {served} swapped in", file=sys.stderr)
            model = swapped
        yield ModelLoaded(entry.name, model.describe(), time.time() - clock)
        for item in pending.of(entry):
            clock = time.time()
            complete_sample_log(entry, item, model, pending)
            yield UnitDone(entry.name, item.task.name, time.time() - clock)
    close_engine(model)
    del model
    gc.collect()


def complete_sample_log(
    entry: ModelEntry, item: PreparedTask, model: Any, pending: Pending
) -> None:
    """Score the samples the partial log lacks, appending each chunk durably; then write the
    finished log in sample order. Under a launcher each process scores its shard into a
    partial log of its own and rank 0 gathers the rows."""
    config, run_dir, samples = pending.config, pending.run_dir, item.samples
    rank, processes = process_rank(), process_count()
    path = None  # one process: the pair's partial log
    if processes > 1:
        path = run_dir.rank_log(entry.name, item.task.name, rank, processes)
        samples = shard(samples, model.chunk_size, rank, processes)
    log = PartialLog(run_dir, entry.name, item.task.name, path)
    for rows in evaluate_chunks(
        model,
        item.task,
        log.remaining(samples),
        max_new_tokens=config.generation.max_new_tokens,
        label=f"{entry.name} {item.task.name}" + (f" [{rank}]" if processes > 1 else ""),
        already_done=len(log.done),
        choices_by=ChoiceScoring.of(entry, config.generation),
        sampling=entry.sampling,
        reasoned_max_new_tokens=config.generation.cot_max_new_tokens,
    ):
        log.append([row.model_dump(mode="json") for row in rows])
    shares = gather_on_main(log.done)
    if shares is None:
        return  # rank 0 writes the log and removes this partial one
    gathered: dict[str, JsonRow] = {}
    for share in shares:
        gathered.update(share)
    log.finish(item.samples, gathered)
