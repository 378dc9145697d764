"""A sample log while it is scored, the same for every executor: each batch of rows is
appended durably to a partial log as it comes, so a run killed at any moment resumes after
its last whole batch; once every sample has its row the log is written whole, in sample
order, and the partial logs it was gathered from are removed."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from medharness.core.io import append_jsonl_durable, read_jsonl_prefix, write_jsonl_atomic
from medharness.core.rundir import RunDir
from medharness.run.state import JsonRow
from medharness.tasks import Sample


class PartialLog:
    """The rows of a (model, task) scored so far, read back from ``path`` (this process's
    partial log, or one rank's under a launcher) and appended to it."""

    def __init__(self, run_dir: RunDir, model: str, task: str, path: Path | None = None) -> None:
        self.run_dir, self.model, self.task = run_dir, model, task
        self.path = path or run_dir.partial_log(model, task)
        self.done: dict[str, JsonRow] = {
            str(row["doc_id"]): row for row in read_jsonl_prefix(self.path)
        }

    def append(self, rows: list[JsonRow]) -> None:
        append_jsonl_durable(self.path, rows)
        self.done.update((str(row["doc_id"]), row) for row in rows)

    def remaining(self, samples: Sequence[Sample]) -> list[Sample]:
        return [sample for sample in samples if sample.doc_id not in self.done]

    def whole(self, samples: Sequence[Sample]) -> bool:
        return len(self.done) == len(samples)

    def finish(self, samples: Sequence[Sample], rows: dict[str, JsonRow] | None = None) -> None:
        """The finished log from this log's rows (or ``rows`` gathered from every rank)."""
        rows = self.done if rows is None else rows
        write_sample_log(self.run_dir, self.model, self.task, samples, rows)


def write_sample_log(
    run_dir: RunDir, model: str, task: str, samples: Sequence[Sample], rows: dict[str, JsonRow]
) -> None:
    """The finished log, one row per sample in sample order; the partial logs it was
    gathered from (this process's, each rank's) removed."""
    write_jsonl_atomic(run_dir.sample_log(model, task), (rows[sample.doc_id] for sample in samples))
    for written in run_dir.partial_logs(model, task):
        written.unlink(missing_ok=True)
