"""Users' own test sets, declared in the config: no Python.

A JSON Lines, CSV or Parquet file and a column mapping become a task like the built-in ones:
``generation`` (the question as the user turn of the model's chat template, scored against
the reference column by ROUGE/BLEU, and by judges where the config has them) or
``multiple_choice`` (lm-eval's MedQA prompt, ``Question: ...\\nA. ...\\nAnswer:``, scored by
the log-likelihood of each option letter). Every bad row is one error naming the file, the
row and the column. ``split`` keeps one part of MedQuAD's leakage-safe 80/10/10 split, decided
by the normalised question text, so a file that also feeds training can be evaluated on
questions training never sees.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from medharness.core.errors import UserError
from medharness.core.io import numbered_jsonl, resolve_inside, sha256_file
from medharness.core.validation import Strict
from medharness.tasks.base import LoadedData, Sample, Task, require_text
from medharness.tasks.hub_sources import hub_rows, parse_source, pinned
from medharness.tasks.medquad import split_of
from medharness.tasks.multiple_choice import LETTERS, letter_sample, medqa_prompt

GENERATION_METRICS = ("rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "disclaimer_rate")
SUFFIXES = (".jsonl", ".csv", ".parquet")


class Columns(Strict):
    """Which column holds what; only ``question`` and the answer's column are required."""

    id: str | None = None  # unique per row; default: the row number
    question: str = "question"
    answer: str | None = None  # generation: the reference answer
    options: list[str] | str | None = None  # multiple choice: one column per option, or
    #                                         one column holding a list of options
    gold: str | None = None  # multiple choice: the right option's letter (A, B, ...)
    group_by: list[str] = Field(default_factory=list)  # breakdown columns in reports


class CustomTask(Strict):
    kind: Literal["generation", "multiple_choice"]
    # .jsonl, .csv or .parquet, relative to the working folder; or a hub dataset,
    # hub:ORG/NAME[@REVISION] (or a local folder holding one in the hub's layout)
    path: str = Field(min_length=1)
    hub_split: str = "test"  # the split of a hub dataset to read
    columns: Columns = Columns()
    version: str = "1"  # bump when the file or its meaning changes; part of comparability
    description: str = ""
    split: Literal["train", "validation", "test"] | None = None  # None: every row

    @model_validator(mode="after")
    def columns_for_kind(self) -> CustomTask:
        if self.kind == "generation" and not self.columns.answer:
            raise ValueError("columns.answer: a generation task needs its reference column")
        if self.kind == "multiple_choice" and not (self.columns.options and self.columns.gold):
            raise ValueError("columns.options and columns.gold: a multiple-choice task needs both")
        return self


def custom_task(name: str, spec: CustomTask, base_dir: Path) -> Task:
    """The task a config entry declares; its rows are read only when the task is loaded."""
    generation = spec.kind == "generation"
    task = Task(
        name=name,
        version=f"custom-{spec.version}",
        kind="generate" if generation else "multiple_choice",
        summary=spec.description or f"{spec.kind} questions from {spec.path}",
        data_subdir="",
        obtain_hint=f"tasks: {name}: custom.path names {spec.path}",
        load=partial(load_custom, spec, base_dir),
        metric_names=GENERATION_METRICS if generation else ("acc",),
        prompt_template="{question} (as the user turn of the model's chat template)"
        if generation
        else "Question: {question}\n{A. option ...}Answer:",
        breakdown_keys=tuple(spec.columns.group_by),
    )
    if from_datasets(spec):
        return replace(task, source=parse_source(spec.path, base_dir).label)
    path = resolve_inside(base_dir, spec.path)
    return replace(task, data_subdir=str(path.parent))  # absolute: the data root does not apply


def from_datasets(spec: CustomTask) -> bool:
    """A hub dataset (or a local copy in its layout), read through ``datasets``."""
    return spec.path.startswith("hub:") or not spec.path.endswith(SUFFIXES)


def load_custom(spec: CustomTask, base_dir: Path, folder: Path) -> LoadedData:
    """A file's rows, or a hub dataset's split, as validated samples."""
    if from_datasets(spec):
        source = pinned(parse_source(spec.path, base_dir))
        rows, digest = hub_rows(source, spec.hub_split)
        numbered = ((f"{source.label} row {i + 1}", row) for i, row in enumerate(rows))
        return samples_of(spec, numbered, source.label, {source.label: digest})
    path = resolve_inside(base_dir, spec.path)
    if not path.is_file():
        raise UserError(f"custom task file not found: {path}")
    return samples_of(spec, rows_of(path), str(path), {path.name: sha256_file(path)})


def samples_of(
    spec: CustomTask,
    rows: Iterable[tuple[str, dict[str, Any]]],
    what: str,
    file_hashes: dict[str, str],
) -> LoadedData:
    columns = spec.columns
    samples: list[Sample] = []
    first_row: dict[str, str] = {}
    for where, row in rows:
        wanted = [columns.question, columns.id, columns.answer, columns.gold, *columns.group_by]
        if isinstance(columns.options, str):
            wanted.append(columns.options)
        elif columns.options:
            wanted.extend(columns.options)
        missing = [name for name in wanted if name and name not in row]
        if missing:
            raise UserError(
                f"{where}: column {missing[0]!r} not found (the row has: "
                f"{', '.join(map(str, row)) or 'nothing'})"
            )
        number = where.rsplit(":", 1)[-1]
        if columns.id:
            raw = row[columns.id]
            doc_id = require_text(None if raw is None else str(raw), where, columns.id)
        else:
            doc_id = number
        if doc_id in first_row:
            raise UserError(f"{where}: {columns.id}: {doc_id!r} repeats line {first_row[doc_id]}")
        first_row[doc_id] = number
        question = require_text(row[columns.question], where, columns.question)
        if spec.split is not None and split_of(question) != spec.split:
            continue
        metadata: dict[str, Any] = {"question": question}
        metadata.update((key, group_value(row[key], where, key)) for key in columns.group_by)
        if spec.kind == "generation":
            assert columns.answer is not None
            target = require_text(row[columns.answer], where, columns.answer)
            samples.append(Sample(doc_id=doc_id, prompt=question, target=target, metadata=metadata))
        else:
            options = options_of(row, columns, where)
            gold = gold_of(row, columns, where, len(options))
            prompt = medqa_prompt(question, options)
            samples.append(letter_sample(doc_id, prompt, len(options), gold, metadata))
    if not samples:
        raise UserError(f"{what}: no rows" + (f" in the {spec.split} split" if spec.split else ""))
    return LoadedData(samples, file_hashes)


def group_value(value: Any, where: str, column: str) -> str | int | float | bool | None:
    """A breakdown column's value: text, a number or empty (bytes or a nested value would
    not survive the run's JSON logs)."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise UserError(
        f"{where}: {column}: a group_by column holds text or numbers, not {type(value).__name__}"
    )


def options_of(row: dict[str, Any], columns: Columns, where: str) -> list[str]:
    if isinstance(columns.options, str):
        values = row[columns.options]
        if isinstance(values, str):
            try:
                values = json.loads(values)  # a list written into a CSV cell
            except json.JSONDecodeError:
                values = None
        if not isinstance(values, list) or not 2 <= len(values) <= len(LETTERS):
            raise UserError(f"{where}: {columns.options}: expected a list of 2 or more options")
        return [require_text(v, where, f"{columns.options}[{i}]") for i, v in enumerate(values)]
    assert columns.options is not None
    return [require_text(row[name], where, name) for name in columns.options]


def gold_of(row: dict[str, Any], columns: Columns, where: str, n_options: int) -> int:
    assert columns.gold is not None
    value = row[columns.gold]
    letters = LETTERS[:n_options]
    if not (isinstance(value, str) and value.strip().upper() in letters and value.strip()):
        raise UserError(
            f"{where}: {columns.gold}: {value!r} is not one of the option letters "
            f"{', '.join(letters)}"
        )
    return letters.index(value.strip().upper())


def rows_of(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(``file:row``, row) for every row; a line or cell that is not UTF-8 or not a record
    is an error naming its row."""
    if path.suffix == ".parquet":
        yield from _parquet_rows(path)
    elif path.suffix == ".csv":
        data = path.read_bytes()
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            bad_line = data[: exc.start].count(b"\n") + 1
            raise UserError(f"{path}:{bad_line}: not UTF-8 text") from None
        yield from csv_rows(path, text)
    else:
        for number, row in numbered_jsonl(path):
            yield f"{path}:{number}", row


CSV_CELL_LIMIT = 16 << 20  # characters; Python's csv module stops at 128 KiB by default


def csv_rows(path: Path, text: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The rows of a CSV file; a cell past the limit, or a row the reader cannot parse, is
    one line naming it."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    limit = csv.field_size_limit(CSV_CELL_LIMIT)
    try:
        for row in reader:
            yield f"{path}:{reader.line_num}", dict(row)
    except csv.Error as exc:
        raise UserError(f"{path}:{reader.line_num + 1}: not readable as CSV ({exc})") from None
    finally:
        csv.field_size_limit(limit)


def _parquet_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises its own types for a bad file
        raise UserError(f"{path}: not a readable Parquet file ({exc})") from None
    for number, row in enumerate(table.to_pylist(), start=1):
        yield f"{path}:row {number}", row
