"""lm-eval's output layout: what ``lm-eval run --output_path DIR --log_samples`` writes
(``DIR/MODEL/results_DATE.json`` and ``DIR/MODEL/samples_TASK_DATE.jsonl``), read as a run so
that reports, gates and leaderboards take a team's existing lm-eval results without
re-running anything; and the pieces of that layout the export writes with.

The files follow lm-eval's ``EvaluationTracker``: metric keys ``METRIC,FILTER`` with
``METRIC_stderr,FILTER`` beside them, every leaf of ``resps`` as text, and per-sample
``doc_hash`` / ``prompt_hash`` / ``target_hash`` (sha256, as lm-eval computes them) whose
concatenation gives the ``task_hashes`` entry that says two runs saw the same data.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from medharness.core.errors import UserError
from medharness.core.io import read_jsonl
from medharness.core.records import (
    SCHEMA_VERSION,
    ChoiceRow,
    DataRecord,
    Decoding,
    GenerationRow,
    InputRow,
    Manifest,
    ResultsFile,
    SampleRow,
    TaskIdentity,
    TaskResult,
)
from medharness.core.rundir import RunDir
from medharness.tasks import TASKS, Task
from medharness.tasks.base import LoadedData, TaskKind
from medharness.tasks.metrics import aggregate, answer_scores
from medharness.tasks.textscore import bleu_statistics

FILTER = "none"  # medharness applies no lm-eval filter: the metric key suffix
# lm-eval logs no bootstrap settings per sample: intervals of a read folder use medharness's
DEFAULT_SEED = 1234
DEFAULT_RESAMPLES = 1000
# the free-text metrics medharness rescores from an lm-eval sample's answer and target
GENERATION_METRICS = ("rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "disclaimer_rate")


def lm_eval_hash(text: str) -> str:
    """lm-eval's ``hash_string``."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sanitized_model_name(name: str) -> str:
    """lm-eval's ``sanitize_model_name``: the folder its files for a model go in."""
    return re.sub(r"[\"<>:/|\\?*\[\]]+", "__", name)


def file_stamp(name: str) -> str:
    """lm-eval's ``get_file_datetime``: what follows the last '_' of a file name."""
    return name[name.rfind("_") + 1 :].removesuffix(".jsonl").removesuffix(".json")


@dataclass(frozen=True)
class LmEvalRun:
    """An lm-eval output folder as the records of a run, scored as medharness scores its own."""

    results: ResultsFile
    manifest: Manifest
    samples: dict[tuple[str, str], list[SampleRow]]
    inputs: dict[str, dict[str, InputRow]]
    tasks: dict[str, Task]


def is_lm_eval_folder(path: Path) -> bool:
    """An lm-eval ``--output_path`` folder (or one model's folder inside it), not a run."""
    return not RunDir(path).results.is_file() and bool(results_files(path))


def results_files(path: Path) -> list[Path]:
    """The newest results file of each model folder under ``path`` (or of ``path`` itself)."""
    folders = [path, *sorted(p for p in path.iterdir() if p.is_dir())] if path.is_dir() else []
    newest = []
    for folder in folders:
        found = sorted(folder.glob("results_*.json"), key=lambda p: file_stamp(p.name))
        if found:
            newest.append(found[-1])
    return newest


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not a JSON results file of lm-eval ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise UserError(f"{path}: no 'results' object; not a results file of lm-eval")
    return data


def samples_file(results_path: Path, task: str) -> Path:
    """The samples of ``task`` written with these results (same stamp), else its newest."""
    same = results_path.with_name(f"samples_{task}_{file_stamp(results_path.name)}.jsonl")
    if same.is_file():
        return same
    found = sorted(results_path.parent.glob(f"samples_{task}_*.jsonl"))
    found = [p for p in found if p.name[len("samples_") : p.name.rfind("_")] == task]
    if not found:
        raise UserError(
            f"{results_path.parent}: no samples_{task}_*.jsonl beside {results_path.name}; "
            "medharness compares per-sample logs: run lm-eval again with --log_samples"
        )
    return max(found, key=lambda p: file_stamp(p.name))


def option_text(argument: dict[str, Any], delimiter: str) -> str:
    text = str(argument.get("arg_1", ""))
    return text.removeprefix(delimiter) if delimiter else text


def choice_row(sample: dict[str, Any], doc_id: str, delimiter: str) -> ChoiceRow:
    """A log-likelihood multiple-choice sample: options from the requests, the chosen one the
    most likely (lm-eval's ``acc``), gold from the target."""
    arguments = list(sample["arguments"].values())
    choices = [option_text(argument, delimiter) for argument in arguments]
    likelihoods = [float(pair[0]) for pair in sample["filtered_resps"]]
    chosen = max(range(len(likelihoods)), key=likelihoods.__getitem__)
    target = str(sample["target"])
    gold = int(target) if target.lstrip("-").isdigit() else choices.index(target)
    if not 0 <= gold < len(choices) or len(likelihoods) != len(choices):
        raise ValueError(f"doc {doc_id}: its target or log-likelihoods do not fit its options")
    logged = float(sample["acc"])
    if logged != float(chosen == gold):  # recomputed from the rawest numbers present
        raise UserError(
            f"doc {doc_id}: the logged acc {logged:g} disagrees with its log-likelihoods, which "
            f"pick option {chosen} (gold {gold}); the samples file was edited or is not lm-eval's"
        )
    return ChoiceRow(
        doc_id=doc_id,
        target=choices[gold],
        prediction=choices[chosen],
        choices=choices,
        loglikelihoods=likelihoods,
        chosen=chosen,
        gold=gold,
        metrics={"acc": logged},
    )


def generation_rows(
    samples: Sequence[dict[str, Any]], doc_ids: Sequence[str], names: Sequence[str]
) -> list[SampleRow]:
    """Free-text samples scored by medharness's own metrics (the ones lm-eval logged that
    medharness knows), from the logged answer and target."""
    predictions = [str(sample["filtered_resps"][0]) for sample in samples]
    targets = [str(sample["target"]) for sample in samples]
    scores = answer_scores(names, predictions, targets)
    statistics_rows = bleu_statistics(predictions, targets) if "bleu" in names else None
    return [
        GenerationRow(
            doc_id=doc_id,
            target=targets[i],
            prediction=predictions[i],
            metrics={name: float(values[i]) for name, values in scores.items()},
            bleu_stats=None if statistics_rows is None else [int(v) for v in statistics_rows[i]],
        )
        for i, doc_id in enumerate(doc_ids)
    ]


def sample_doc_id(sample: dict[str, Any]) -> str:
    """medharness's id where the document carries it (the lm-eval view of its tasks), else
    lm-eval's index."""
    doc = sample.get("doc")
    if isinstance(doc, dict) and isinstance(doc.get("doc_id"), str):
        return doc["doc_id"]
    return str(sample["doc_id"])


def input_of(sample: dict[str, Any], doc_id: str, row: SampleRow) -> InputRow:
    first: dict[str, Any] = next(iter(sample["arguments"].values()), {})
    choices = row.choices if isinstance(row, ChoiceRow) else None
    return InputRow(
        doc_id=doc_id,
        prompt=str(first.get("arg_0", "")),
        target=row.target,
        choices=choices,
        gold=row.gold if isinstance(row, ChoiceRow) else None,
    )


def unloadable(folder: Path) -> LoadedData:
    raise UserError(f"{folder}: a task read from lm-eval's output has no data of its own")


def imported_task(name: str, kind: TaskKind, version: str, metrics: Sequence[str]) -> Task:
    """The task as medharness scores it: its own definition where lm-eval ran medharness's
    view of it, else a plain one named after lm-eval's; either way with the metrics the
    samples have."""
    known = TASKS.get(name)
    if known is not None and known.kind == kind:
        return replace(known, metric_names=tuple(m for m in known.metric_names if m in metrics))
    return Task(
        name=name,
        version=version,
        kind=kind,
        summary=f"lm-eval task {name}",
        data_subdir="",
        obtain_hint="",
        load=unloadable,
        metric_names=tuple(metrics),
    )


def reported_metrics(data: dict[str, Any], task: str) -> list[str]:
    """The task's metrics in the order its results entry lists them (``METRIC,FILTER``)."""
    keys = data["results"].get(task, {})
    return list(dict.fromkeys(k.split(",")[0] for k in keys if "," in k and "_stderr," not in k))


def read_task(
    results_path: Path, task: str, data: dict[str, Any]
) -> tuple[Task, list[SampleRow], dict[str, InputRow], TaskIdentity]:
    config = data.get("configs", {}).get(task, {})
    output_type = config.get("output_type", "multiple_choice")
    delimiter = str(config.get("target_delimiter", " "))
    path = samples_file(results_path, task)
    try:
        samples = sorted(read_jsonl(path), key=lambda s: int(s["doc_id"]))
        doc_ids = [sample_doc_id(sample) for sample in samples]
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise UserError(f"{path}: not a samples file of lm-eval --log_samples ({exc!r})") from None
    repeated = sorted({doc for doc in doc_ids if doc_ids.count(doc) > 1})
    if repeated:  # one question logged twice would count twice in n and accuracy
        raise UserError(
            f"{path}: doc_id {repeated[0]} appears more than once"
            + (f" (and {len(repeated) - 1} more)" if len(repeated) > 1 else "")
            + "; each question is one sample"
        )
    try:
        if output_type == "multiple_choice":
            rows: list[SampleRow] = [
                choice_row(s, doc_id, delimiter) for s, doc_id in zip(samples, doc_ids, strict=True)
            ]
            kind: TaskKind = "multiple_choice"
            metrics = ["acc"]
        elif output_type == "generate_until":
            logged = {name for s in samples for name in s.get("metrics", [])}
            metrics = [name for name in reported_metrics(data, task) if name in logged]
            metrics = [name for name in metrics if name in GENERATION_METRICS]
            rows = generation_rows(samples, doc_ids, metrics)
            kind = "generate"
        else:
            raise UserError(
                f"{path}: lm-eval output_type {output_type!r}; medharness reads "
                "multiple_choice and generate_until tasks"
            )
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    except (KeyError, IndexError, TypeError, ValueError, OverflowError, AttributeError) as exc:
        raise UserError(f"{path}: not a samples file of lm-eval --log_samples ({exc!r})") from None
    version = str(data.get("versions", {}).get(task, "unversioned"))
    definition = imported_task(task, kind, version, metrics)
    inputs = {
        doc_id: input_of(sample, doc_id, row)
        for sample, doc_id, row in zip(samples, doc_ids, rows, strict=True)
    }
    identity = TaskIdentity(
        version=version,
        kind=kind,
        summary=definition.summary,
        prompt=str(config.get("doc_to_text", "")),
        n=len(rows),
        sample_ids_sha256=hashlib.sha256("\n".join(doc_ids).encode()).hexdigest(),
        data_sha256={"lm-eval task_hash": str(data.get("task_hashes", {}).get(task, ""))},
    )
    return definition, rows, inputs, identity


def model_name(data: dict[str, Any], folder: Path) -> str:
    """The model's name as lm-eval recorded it, its last path part for a local path."""
    name = str(data.get("model_name") or folder.name)
    return name.rstrip("/").rsplit("/", 1)[-1] if name.startswith(("/", ".")) else name


def statistics_settings(data: dict[str, Any]) -> dict[str, Any]:
    """How intervals and corrections are computed: as recorded where medharness exported the
    folder, else medharness's defaults (lm-eval's ``bootstrap_iters`` counts the resamples of
    its own standard errors, 100,000 by default)."""
    config = data.get("config") or {}
    if data.get("model_source") != "medharness":
        return {"bootstrap_resamples": DEFAULT_RESAMPLES, "seed": DEFAULT_SEED}
    return {
        "bootstrap_resamples": int(config.get("bootstrap_iters", DEFAULT_RESAMPLES)),
        "seed": int(config.get("random_seed", DEFAULT_SEED)),
        "multiple_comparisons": str(config.get("multiple_comparisons", "holm")),
    }


@contextlib.contextmanager
def not_lm_eval_if_broken(results_path: Path) -> Iterator[None]:
    """Inside, a results file of another shape than lm-eval's (odd task names, configs,
    fields of the wrong type) is one line naming it, not a traceback."""
    try:
        yield
    except (KeyError, TypeError, AttributeError, ValueError, OverflowError) as exc:
        raise UserError(f"{results_path}: not an lm-eval results file ({exc!r})") from None


def finished_at(date: Any) -> str:
    """lm-eval's ``date`` (seconds since the epoch) as an ISO time; what is no such number
    reads as unknown rather than as an error."""
    try:
        return datetime.fromtimestamp(float(date)).isoformat()
    except (TypeError, ValueError, OverflowError, OSError):
        return "unknown"


def read_lm_eval_folder(path: Path) -> LmEvalRun:
    """An lm-eval ``--output_path`` folder as a run: each model folder's newest results and
    the samples written with them, scored and summarised as medharness scores its own runs
    (lm-eval's ``acc`` per sample is kept as it is)."""
    found = results_files(path)
    if not found:
        raise UserError(f"{path}: no lm-eval results_*.json in it or in its model folders")
    results: dict[str, dict[str, TaskResult]] = {}
    samples: dict[tuple[str, str], list[SampleRow]] = {}
    inputs: dict[str, dict[str, InputRow]] = {}
    tasks: dict[str, Task] = {}
    identities: dict[str, TaskIdentity] = {}
    models: dict[str, dict[str, Any]] = {}
    read = [(results_path, read_json(results_path)) for results_path in found]
    first = read[0][1]
    settings = statistics_settings(first)
    resamples, seed = settings["bootstrap_resamples"], settings["seed"]
    for results_path, data in read:
        with not_lm_eval_if_broken(results_path):
            model = model_name(data, results_path.parent)
            if model in results:
                raise UserError(f"{path}: two lm-eval folders are both model {model!r}")
            subtasks = data.get("group_subtasks", {})
            task_names = [t for t in data["results"] if not subtasks.get(t)]
            results[model] = {}
            for task in task_names:
                definition, rows, asked, identity = read_task(results_path, task, data)
                tasks[task], identities[task] = definition, identity
                inputs.setdefault(task, asked)
                samples[(model, task)] = rows
                results[model][task] = aggregate(definition, rows, resamples=resamples, seed=seed)
        models[model] = {
            "backend": "lm-eval",
            "model": str(data.get("model_name", "")),
            "model_args": data.get("config", {}).get("model_args"),
            "lm_eval_results": str(results_path),
        }
    finished = finished_at(first.get("date"))
    gen_kwargs = first.get("config", {}).get("gen_kwargs") or {}
    manifest = Manifest(
        medharness_version="",  # not written by medharness: lm-eval's version is below
        git_sha=first.get("git_hash"),
        command=["lm-eval", "run", "--output_path", str(path)],
        started=finished,
        finished=finished,
        config={"name": path.name, **settings},
        tasks=identities,
        models=models,
        pair_keys={},
        data=DataRecord(root=str(path), origin="lm-eval output", sha256={}),
        seeds={"bootstrap": seed},
        decoding=Decoding(
            strategy="greedy" if not gen_kwargs.get("do_sample") else "sampled",
            max_new_tokens=int(gen_kwargs.get("max_gen_toks", 256)),
        ),
        versions={"lm_eval": str(first.get("lm_eval_version", ""))},
        hardware={},
        timings_s={},
    )
    baseline = next(iter(results))
    return LmEvalRun(
        ResultsFile(schema_version=SCHEMA_VERSION, baseline=baseline, results=results),
        manifest,
        samples,
        inputs,
        tasks,
    )
