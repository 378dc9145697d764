"""Read saved run directories: the only input reports have.

Every file is parsed into its typed record (``medharness.core.records``): a hand-edited or
foreign file with a missing or mistyped field is one clear error naming the file and the field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from medharness.config import ModelEntry, recorded_task
from medharness.core.errors import UserError, first_line
from medharness.core.io import read_jsonl
from medharness.core.records import (
    INPUT_ROWS,
    SAMPLE_ROWS,
    SCHEMA_VERSION,
    TRAIN_LOG_ROWS,
    ChoiceRow,
    InputRow,
    Manifest,
    MetricValue,
    ResultsFile,
    SampleRow,
    TaskResult,
    TrainLogRow,
)
from medharness.core.rundir import RunDir
from medharness.core.validation import format_validation_error
from medharness.reports.lm_eval_files import is_lm_eval_folder, read_lm_eval_folder
from medharness.tasks import Task
from medharness.tasks.metrics import aggregate
from medharness.tasks.metrics.suites import suite_results

R = TypeVar("R", bound=BaseModel)


def read_log(path: Path) -> list[dict[str, Any]]:
    """A JSONL file parsed as one JSON array (one C call instead of one per line); the line
    reader, which names the bad line, only runs when that fails."""
    try:
        text = path.read_text(encoding="utf-8").strip()
        rows = json.loads("[" + text.replace("\n", ",") + "]") if text else []
    except (ValueError, RecursionError):  # bad bytes, JSON, digits or nesting: name the line
        return list(read_jsonl(path))
    if not all(isinstance(row, dict) for row in rows):
        return list(read_jsonl(path))
    return rows


def validated_rows(path: Path, adapter: TypeAdapter[list[R]]) -> list[R]:
    """A JSONL log as typed rows; the first bad row is named by its line number."""
    rows = read_log(path)
    try:
        return adapter.validate_python(rows)
    except ValidationError as exc:
        first = exc.errors()[0]
        index, *field = first["loc"]
        if field and field[0] in ("generation", "choice"):  # which kind of row it was read as
            field = field[1:]
        where = ".".join(str(part) for part in field) or "(row)"
        raise UserError(f"{path}:{int(index) + 1}: {where}: {first['msg']}") from None


def refuse_untrue_rows(path: Path, rows: list[SampleRow]) -> None:
    """A sample log's rows are believed only where they agree with themselves: one row per
    sample (a repeated id would count twice), and each option-scored row's choice and
    accuracy recomputed from its log-likelihoods, gold and choice."""
    seen: dict[str, int] = {}
    for line, row in enumerate(rows, start=1):
        if row.doc_id in seen:
            raise UserError(f"{path}:{line}: doc_id {row.doc_id!r} repeats line {seen[row.doc_id]}")
        seen[row.doc_id] = line
        problem = untrue_choice(row) if isinstance(row, ChoiceRow) else None
        if problem:
            raise UserError(f"{path}:{line}: {problem}; the log was changed after the run")


def untrue_choice(row: ChoiceRow) -> str | None:
    """How a multiple-choice row contradicts its own raw numbers, if it does."""
    values = row.loglikelihoods
    if values:  # scored by likelihood: the choice is the most likely option
        scores = [value for value in values if value is not None]
        most_likely = scores.index(max(scores)) if len(scores) == len(values) else -1
        if row.chosen != most_likely:
            return f"chosen {row.chosen}, but the most likely option is {most_likely}"
    answers = [(a.chosen, a.metrics.get("acc")) for a in row.repeats or ()]
    for chosen, acc in answers or [(row.chosen, row.metrics.get("acc"))]:
        if acc is not None and acc != float(chosen == row.gold):
            return f"acc {acc:g}, but chosen {chosen} and gold {row.gold}"
    acc = row.metrics.get("acc")
    if answers and acc is not None and not math.isclose(acc, mean_of(a for _, a in answers)):
        return f"acc {acc:g}, but its sampled answers' mean is {mean_of(a for _, a in answers):g}"
    return None


def mean_of(values: Iterable[float | None]) -> float:
    present = [value for value in values if value is not None]
    return sum(present) / len(present) if present else math.nan


@dataclass
class RunData:
    """One run directory, its files parsed and validated on first use."""

    path: Path
    verify: bool = True  # recompute results.json from the sample logs before trusting it
    _samples: dict[tuple[str, str], list[SampleRow]] = field(default_factory=dict)
    _inputs: dict[str, dict[str, InputRow]] = field(default_factory=dict)
    _tasks: dict[str, Task] = field(default_factory=dict)  # definitions read with the run

    @classmethod
    def open(cls, path: Path, verify: bool = True, rescoring: bool = False) -> RunData:
        """A run directory, or an lm-eval ``--output_path`` folder made with ``--log_samples``
        (read and scored once here: there is no stored aggregate to verify)."""
        if is_lm_eval_folder(path) and not rescoring:
            return cls.of_lm_eval(path)
        layout = RunDir(path)
        for record in (layout.results, layout.manifest):
            if not record.is_file():
                raise UserError(f"{path} is not a finished run directory (no {record.name})")
        if layout.rescoring.exists() and not rescoring:
            raise UserError(
                f"{path}: a rescore was interrupted while writing; run `medharness rescore "
                f"{path}` again to finish it"
            )
        return cls(path, verify)

    @classmethod
    def of_lm_eval(cls, path: Path) -> RunData:
        read = read_lm_eval_folder(path)
        run = cls(path, False, read.samples, read.inputs, read.tasks)
        # the cached properties' slots, filled with what was read
        run.__dict__.update(results=read.results, manifest=read.manifest)
        return run

    @property
    def layout(self) -> RunDir:
        return RunDir(self.path)

    @property
    def name(self) -> str:
        return self.layout.name

    @cached_property
    def results(self) -> ResultsFile:
        """results.json, checked against the sample logs it was computed from: an edited
        aggregate is refused, never judged or shown."""
        stored = self._record(self.layout.results, ResultsFile)
        if not self.verify:
            return stored
        resamples, seed = self.manifest.bootstrap_settings()
        for model, tasks in stored.results.items():
            for task, result in tasks.items():
                definition = self.task(task)
                if definition is not None:
                    self._check_result(model, definition, result, resamples, seed)
        if stored.suites:
            self._check_suites(stored, resamples, seed)
        return stored

    def model_entry(self, name: str) -> ModelEntry | None:
        """A model's entry as the run's config recorded it; None where it cannot be read
        (runs of an older config schema)."""
        for item in self.manifest.config.get("models", []):
            if isinstance(item, dict) and item.get("name") == name:
                try:
                    return ModelEntry.model_validate(item)
                except ValueError:
                    return None
        return None

    def _check_suites(self, stored: ResultsFile, resamples: int, seed: int) -> None:
        """Each suite's values and comparisons recomputed from its tasks' sample logs."""
        baseline = stored.suites.get(stored.baseline, {})
        suites = {name: result.tasks for name, result in baseline.items()}
        rows = {
            (model, task): self.samples(model, task)
            for model in stored.suites
            for task in dict.fromkeys(t for tasks in suites.values() for t in tasks)
        }
        recomputed = suite_results(suites, stored.results, rows, resamples=resamples, seed=seed)
        for model, by_suite in stored.suites.items():
            for name, result in by_suite.items():
                if recomputed.get(model, {}).get(name) != result:  # deterministic: exact
                    raise UserError(
                        f"{self.layout.results}: suite {model}/{name} disagrees with its "
                        "tasks' sample logs; the file or a log was changed after the run"
                    )

    def task(self, name: str) -> Task | None:
        """The definition of a task of this run: built-in, or the user's own as its config
        declared it; None for a task this medharness does not know."""
        return self._tasks.get(name) or recorded_task(self.manifest.config, name)

    def _check_result(
        self, model: str, definition: Task, stored: TaskResult, resamples: int, seed: int
    ) -> None:
        task = definition.name
        rows = self.samples(model, task)
        recomputed = aggregate(definition, rows, resamples=resamples, seed=seed)
        differing = [
            name
            for name, value in stored.metrics.items()
            if name not in recomputed.metrics or not same(value, recomputed.metrics[name])
        ]
        if stored.n != recomputed.n or differing:
            what = f"n {stored.n} vs {recomputed.n}" if stored.n != recomputed.n else ""
            what = what or ", ".join(
                f"{name} {stored.metrics[name].value:.6g} vs "
                + (f"{recomputed.metrics[name].value:.6g}" if name in recomputed.metrics else "-")
                for name in differing
            )
            raise UserError(
                f"{self.layout.results}: {model}/{task} disagrees with its sample log "
                f"({what}, stored vs recomputed); the file or the log was changed after the run"
            )

    @cached_property
    def manifest(self) -> Manifest:
        return self._record(self.layout.manifest, Manifest)

    def _record(self, path: Path, record: type[R]) -> R:
        data = self._json(path)
        version = data.get("schema_version") if isinstance(data, dict) else None
        if version != SCHEMA_VERSION:
            raise UserError(
                f"{path}: schema_version {version!r}, but this medharness reads "
                f"version {SCHEMA_VERSION}; re-run the config with this medharness to rewrite "
                "the run (finished sample logs are reused)"
            )
        try:
            return record.model_validate(data)
        except ValidationError as exc:
            raise UserError(format_validation_error(str(path), exc)) from None

    def _json(self, path: Path) -> Any:
        """A JSON file of the run, never read through a symbolic link (which could lead out
        of the folder, to a key or a token)."""
        try:
            return json.loads(self.layout.checked(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{exc.lineno}: not valid JSON") from None
        except UnicodeDecodeError:
            raise UserError(f"{path}: not UTF-8 text") from None
        except (ValueError, RecursionError) as exc:  # a number past int's digits, deep nests
            raise UserError(f"{path}: not valid JSON ({first_line(exc)})") from None

    @property
    def models(self) -> list[str]:
        return list(self.results.results)

    def samples(self, model: str, task: str) -> list[SampleRow]:
        key = (model, task)
        if key not in self._samples:
            path = self.layout.checked(self.layout.sample_log(model, task))
            if not path.is_file():
                raise UserError(f"{path} is missing from the run directory")
            rows = validated_rows(path, SAMPLE_ROWS)
            refuse_untrue_rows(path, rows)
            self._samples[key] = rows
        return self._samples[key]

    def inputs(self, task: str) -> dict[str, InputRow]:
        """doc_id -> what the models were asked (prompt, target, metadata) for a task."""
        if task not in self._inputs:
            path = self.layout.checked(self.layout.input_log(task))
            if not path.is_file():
                raise UserError(f"{path} is missing from the run directory")
            self._inputs[task] = {row.doc_id: row for row in validated_rows(path, INPUT_ROWS)}
        return self._inputs[task]

    def train_log(self, model: str) -> list[TrainLogRow]:
        path = self.layout.checked(self.layout.training(model) / "log.jsonl")
        return validated_rows(path, TRAIN_LOG_ROWS) if path.is_file() else []

    def trained(self, model: str) -> dict[str, Any]:
        """The summary of a model's training; empty for a model the run did not train."""
        record = self.manifest.models.get(model)
        return (record.trained if record else None) or {}

    def best_step(self, model: str) -> int | None:
        """The checkpoint a training kept as its result, when it kept the best one."""
        trained = self.trained(model)
        best = trained.get("best") or {}
        return int(best["step"]) if best.get("step") is not None else None

    def training_warnings(self, model: str) -> list[str]:
        """What the run said of a training that may have left its model almost unchanged."""
        trained = self.trained(model)
        return [str(warning) for warning in trained.get("warnings") or []]

    def sweeps(self) -> dict[str, dict[str, Any]]:
        """Model -> its hyper-parameter sweep (``train/<model>/sweep.json``), where it had one."""
        return {
            path.parent.name: self._json(path)
            for path in sorted(self.layout.train.glob("*/sweep.json"))
        }


def same(stored: MetricValue, recomputed: MetricValue) -> bool:
    """Equal up to float rounding (a value written as JSON and read back is exact)."""
    pairs = [(stored.value, recomputed.value), *zip(stored.ci95, recomputed.ci95, strict=True)]
    return all(math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) for a, b in pairs)
