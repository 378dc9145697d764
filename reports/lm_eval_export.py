"""A medharness run written as lm-eval writes its ``--output_path``, so lm-eval's own
readers, the Open Medical-LLM Leaderboard's tooling and a team's lm-eval dashboards take it.
A sample's document is written as the lm-eval view of the task (``tasks/*.yaml``) shows it
(doc_id, prompt, target, choices, gold), so an exported run and a real lm-eval run of that
view hash the same multiple-choice documents alike.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from medharness.core.folders import whole_or_absent
from medharness.core.io import write_json_atomic, write_jsonl_atomic
from medharness.core.records import (
    ChoiceRow,
    InputRow,
    Manifest,
    SampleRow,
    TaskIdentity,
    TaskResult,
)
from medharness.reports.lm_eval_files import FILTER, lm_eval_hash, sanitized_model_name
from medharness.reports.runs import RunData
from medharness.tasks.metrics import is_metric
from medharness.tasks.metrics import metric as metric_of


def document(row: InputRow) -> dict[str, Any]:
    """A sample as the lm-eval view of a medharness task (``tasks/lm_eval_glue.py``) shows it."""
    return {
        "doc_id": row.doc_id,
        "prompt": row.prompt,
        "target": row.target,
        "choices": list(row.choices or []),
        "gold": -1 if row.gold is None else row.gold,
    }


def document_hash(doc: dict[str, Any]) -> str:
    """lm-eval's ``doc_hash``: of the document as JSON, indented by two."""
    return lm_eval_hash(json.dumps(doc, indent=2, ensure_ascii=False))


def stderr_of(values: Sequence[float]) -> float | str:
    """lm-eval's ``mean_stderr`` (sample standard deviation over sqrt(n)); "N/A" below two."""
    if len(values) < 2:
        return "N/A"
    return statistics.stdev(values) / math.sqrt(len(values))


def task_scores(result: TaskResult, rows: Sequence[SampleRow]) -> dict[str, Any]:
    """One task's entry under ``results``: each metric and its standard error. Corpus BLEU is
    not a mean of per-sample values, so it has no ``mean_stderr``: "N/A" as lm-eval writes
    where it did not bootstrap."""
    scores: dict[str, Any] = {}
    for name, value in result.metrics.items():
        scores[f"{name},{FILTER}"] = value.value
        per_sample = [row.metrics[name] for row in rows if name in row.metrics]
        averaged = metric_of(name).summary != "corpus_bleu" if is_metric(name) else True
        scores[f"{name}_stderr,{FILTER}"] = stderr_of(per_sample) if averaged else "N/A"
    return scores


def sample_record(
    index: int,
    row: SampleRow,
    asked: InputRow,
    max_new_tokens: int,
    delimiter: str,
    corpus_bleu: bool,
) -> dict[str, Any]:
    """One line of ``samples_TASK_DATE.jsonl``, as lm-eval's tracker writes it: options scored
    by likelihood as one (context, option) request each, anything generated as one request."""
    doc = document(asked)
    if isinstance(row, ChoiceRow) and row.answer is None:
        target: Any = row.gold
        arguments: dict[str, dict[str, Any]] = {
            f"gen_args_{i}": {"arg_0": asked.prompt, "arg_1": delimiter + choice}
            for i, choice in enumerate(row.choices)
        }
        # (log-likelihood, is_greedy) per option: medharness keeps no greedy flag
        filtered: list[Any] = [[str(value), "None"] for value in row.loglikelihoods]
        resps: list[Any] = [[pair] for pair in filtered]
    else:
        text = (
            row.answer if isinstance(row, ChoiceRow) and row.answer is not None else row.prediction
        )
        target = row.gold if isinstance(row, ChoiceRow) else row.target
        sampled = row.repeats is not None  # lm-eval's repeats: every answer of one request
        settings: dict[str, Any] = {
            "until": [],
            "max_gen_toks": max_new_tokens,
            "do_sample": sampled,
        }
        arguments = {"gen_args_0": {"arg_0": asked.prompt, "arg_1": settings}}
        answers = [answer.answer for answer in row.repeats] if row.repeats else [text]
        resps, filtered = [answers], [text]
    record = {
        "doc_id": index,  # lm-eval's: the position in the split; medharness's is in the doc
        "doc": doc,
        "target": str(target),
        "arguments": arguments,
        "resps": resps,
        "filtered_resps": filtered,
        "filter": FILTER,
        "metrics": [*row.metrics, *(["bleu"] if corpus_bleu else [])],
        "doc_hash": document_hash(doc),
        "prompt_hash": lm_eval_hash(asked.prompt),
        "target_hash": lm_eval_hash(str(target)),
        **row.metrics,
    }
    if corpus_bleu:
        record["bleu"] = [row.target, row.prediction]  # the pair lm-eval's BLEU aggregates
    return record


def date_id(manifest: Manifest) -> str:
    """The run's finish time as lm-eval stamps its files: UTC, ISO 8601 with '-' for ':'."""
    finished = datetime.fromisoformat(manifest.finished).astimezone(UTC).replace(tzinfo=None)
    return finished.isoformat().replace(":", "-")


def task_config(task: str, identity: TaskIdentity, rows: Sequence[SampleRow]) -> dict[str, Any]:
    """The ``configs`` entry of a task: how lm-eval would have put it to the model."""
    choice = identity.kind == "multiple_choice"
    scored = choice and all(isinstance(row, ChoiceRow) and row.answer is None for row in rows)
    return {
        "task": task,
        "output_type": "multiple_choice" if scored else "generate_until",
        "doc_to_text": "prompt",
        "doc_to_target": "gold" if choice else "target",
        "doc_to_choice": "choices" if choice else None,
        "num_fewshot": 0,
        "metadata": {"version": identity.version, "medharness_summary": identity.summary},
    }


def export_task(run: RunData, model: str, task: str, path: Path) -> str:
    """Write one task's samples file; return its lm-eval task hash."""
    rows = run.samples(model, task)
    corpus_bleu = "bleu" in run.results.results[model][task].metrics
    asked = run.inputs(task)
    definition = run.task(task)
    delimiter = definition.target_delimiter if definition else " "
    max_new_tokens = run.manifest.decoding.max_new_tokens
    position = {doc_id: i for i, doc_id in enumerate(asked)}  # inputs are in split order
    records = [
        sample_record(
            position[row.doc_id], row, asked[row.doc_id], max_new_tokens, delimiter, corpus_bleu
        )
        for row in rows
    ]
    write_jsonl_atomic(path, records)
    return lm_eval_hash(
        "".join(r["doc_hash"] + r["prompt_hash"] + r["target_hash"] for r in records)
    )


def model_args(manifest: Manifest, model: str) -> str:
    """The manifest's record of ``model`` as lm-eval's ``model_args`` show it."""
    record = manifest.models.get(model)
    return json.dumps(record.model_dump(mode="json") if record else {}, sort_keys=True)


def export_model(run: RunData, model: str, folder: Path) -> None:
    """One model of a run as lm-eval's results file and one samples file per task."""
    manifest = run.manifest
    stamp = date_id(manifest)
    outcome = run.results.results[model]
    tasks = list(outcome)
    rows = {task: run.samples(model, task) for task in tasks}
    hashes = {
        task: export_task(run, model, task, folder / f"samples_{task}_{stamp}.jsonl")
        for task in tasks
    }
    resamples, seed = manifest.bootstrap_settings()
    aggregated = {
        "results": {
            task: {"alias": task, **task_scores(outcome[task], rows[task])} for task in tasks
        },
        "group_subtasks": {task: [] for task in tasks},
        "configs": {task: task_config(task, manifest.tasks[task], rows[task]) for task in tasks},
        "versions": {task: manifest.tasks[task].version for task in tasks},
        "n-shot": {task: 0 for task in tasks},
        "higher_is_better": {
            task: {
                name: metric_of(name).higher_is_better if is_metric(name) else True
                for name in outcome[task].metrics
            }
            for task in tasks
        },
        "n-samples": {
            task: {"original": manifest.tasks[task].n, "effective": len(rows[task])}
            for task in tasks
        },
        "config": {
            "model": "medharness",
            "model_args": model_args(manifest, model),
            "limit": manifest.config.get("limit"),
            "bootstrap_iters": resamples,
            "gen_kwargs": {"max_gen_toks": manifest.decoding.max_new_tokens, "do_sample": False},
            "random_seed": seed,
            "multiple_comparisons": manifest.config.get("multiple_comparisons", "holm"),
        },
        "git_hash": manifest.git_sha,
        "date": datetime.fromisoformat(manifest.started).timestamp(),
        "task_hashes": hashes,
        "model_source": "medharness",
        "model_name": model,
        "model_name_sanitized": sanitized_model_name(model),
        "medharness_version": manifest.medharness_version,
        "total_evaluation_time_seconds": str(manifest.timings_s.get("total", "")),
    }
    write_json_atomic(folder / f"results_{stamp}.json", aggregated)


def export_run(run_dir: Path, output: Path) -> list[Path]:
    """Write every model of a run into ``output`` (made here; refused if it exists) in
    lm-eval's layout; nothing is left at ``output`` unless all of it was written."""
    run = RunData.open(run_dir)
    with whole_or_absent(output) as staging:
        for model in run.models:
            folder = staging / sanitized_model_name(model)
            folder.mkdir()
            export_model(run, model, folder)
    return sorted(output.glob("*/*"))
