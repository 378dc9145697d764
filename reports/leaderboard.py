"""A leaderboard of every model from many runs, with a warning wherever runs differ in a way
that makes their numbers incomparable (task version, prompt, data, sample set). Suites'
averages (multimedqa: the Open Medical-LLM Leaderboard's number) are its first columns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medharness.core.records import SuiteResult, TaskResult
from medharness.reports.comparability import DECODING, describe, differences
from medharness.reports.compare import Comparison, corrected
from medharness.reports.html import (
    CORRECTION_NAMES,
    Entry,
    comparisons_for,
    correction_of,
    entries_of,
    environment,
    in_points,
    primary_metric,
    suites_for,
)
from medharness.reports.runs import RunData
from medharness.tasks.metrics.stats import Correction, exact_binomial_ci


def comparability_warnings(runs: list[RunData]) -> list[str]:
    """One line per task and difference that keeps its columns from comparing like with like
    (each run against the first run that has the task)."""
    warnings = []
    tasks = sorted({task for run in runs for task in run.manifest.tasks})
    for task in tasks:
        having = [run for run in runs if task in run.manifest.tasks]
        differing = dict.fromkeys(
            field for run in having[1:] for field in differences(having[0], run, task)
        )
        for field in differing:
            detail = ", ".join(describe_run(run, task, field) for run in having)
            warnings.append(
                f"{task}: runs differ in {describe([field])} ({detail}); "
                "its columns do not compare like with like"
            )
    return warnings


def describe_run(run: RunData, task: str, field: str) -> str:
    if field in ("n", "sample_ids_sha256"):
        return f"{run.name}: n={run.manifest.tasks[task].n}"
    if field == DECODING:
        return f"{run.name}: max_new_tokens={run.manifest.decoding.max_new_tokens}"
    return run.name


def build_leaderboard(run_dirs: list[Path]) -> dict[str, Any]:
    runs = [RunData.open(path) for path in run_dirs]
    entries = entries_of(runs)
    columns: list[tuple[str, str]] = []  # the suites' averages first: the headline columns
    for entry in entries:
        for name, suite in entry.run.results.suites.get(entry.model, {}).items():
            columns.extend(c for m in suite.metrics if (c := (name, m)) not in columns)
    for entry in entries:
        for task, result in entry.run.results.results[entry.model].items():
            for metric in result.metrics:
                if (task, metric) not in columns:
                    columns.append((task, metric))
    method = correction_of(runs[0])
    tested, family = versus_baseline(entries, columns, method)
    rows = []
    for entry in entries:
        results: dict[str, TaskResult | SuiteResult] = {
            **entry.run.results.suites.get(entry.model, {}),
            **entry.run.results.results[entry.model],
        }
        cells: list[dict[str, Any] | None] = []
        for task, metric in columns:
            found = results.get(task)
            shown = in_points(metric, found.metrics.get(metric) if found else None)
            comparison = tested.get((entry.label, task, metric))
            cells.append(
                None
                if shown is None or found is None
                else {
                    **dict(zip(("value", "low", "high"), shown, strict=True)),
                    "n": found.n,
                    "comparison": comparison,
                }
            )
        manifest = entry.run.manifest
        rows.append(
            {
                "label": entry.label,
                "run": entry.run.name,
                "date": manifest.finished.replace("T", " ")[:16],  # to the minute
                "git": (manifest.git_sha or "")[:10],
                "cells": cells,
                "wins": None if entry is entries[0] else win_rate(entry, tested, columns),
            }
        )
    return {
        "columns": columns,
        "suites": {
            name for entry in entries for name in entry.run.results.suites.get(entry.model, {})
        },
        "rows": rows,
        "warnings": comparability_warnings(runs),
        "runs": runs,
        "baseline": entries[0].label,
        "correction": CORRECTION_NAMES[method],
        "family": family,
    }


Tested = dict[tuple[str, str, str], Comparison]  # (candidate, task, metric) -> comparison


def versus_baseline(
    entries: list[Entry], columns: list[tuple[str, str]], method: Correction
) -> tuple[Tested, int]:
    """Every model against the first on every column they share and can compare (same
    samples and settings), the p-values adjusted together; and how many there were."""
    baseline = entries[0]
    resamples, seed = baseline.run.manifest.bootstrap_settings()
    tasks = list(dict.fromkeys(task for task, _ in columns))
    made: list[Comparison] = []
    for task in tasks:
        if not baseline.has(task):
            continue
        others = [entry for entry in entries[1:] if entry.has(task)]
        metrics = [m for t, m in columns if t == task and m in baseline.result(task).metrics]
        found = comparisons_for(task, baseline, others, metrics, seed, resamples)
        made += [c for result in found.values() if isinstance(result, list) for c in result]
    for name, (_, found) in suites_for(entries, seed, resamples).items():
        made += [
            c
            for result in found.values()
            if isinstance(result, list)
            for c in result
            if (name, c.metric) in columns
        ]
    adjusted = corrected(made, method)
    return {(c.candidate, c.task, c.metric): c for c in adjusted}, len(adjusted)


def win_rate(entry: Entry, tested: Tested, columns: list[tuple[str, str]]) -> dict[str, Any] | None:
    """On how many of the tasks it shares with the baseline a model's headline metric is
    higher, with a Clopper-Pearson 95% interval over those tasks."""
    outcomes = []
    for task in dict.fromkeys(task for task, _ in columns if entry.has(task)):  # not suites
        metrics = [m for t, m in columns if t == task]
        comparison = tested.get((entry.label, task, primary_metric(metrics)))
        if comparison is not None:
            outcomes.append(comparison.difference > 0)
    if not outcomes:
        return None
    won = sum(outcomes)
    low, high = exact_binomial_ci(won, len(outcomes))
    return {"won": won, "of": len(outcomes), "share": won / len(outcomes), "low": low, "high": high}


def render_leaderboard(run_dirs: list[Path]) -> str:
    return environment().get_template("leaderboard.html.j2").render(**build_leaderboard(run_dirs))
