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
from medharness.tasks.metrics import is_breakdown
from medharness.tasks.metrics.stats import Correction, exact_binomial_ci


def comparability_warnings(runs: list[RunData]) -> list[str]:
    """One line per task whose columns do not compare like with like, naming every way its
    runs differ (each run against the first run that has the task). Sample counts that
    differ imply sample sets that differ: one cause, said once."""
    warnings = []
    tasks = sorted({task for run in runs for task in run.manifest.tasks})
    for task in tasks:
        having = [run for run in runs if task in run.manifest.tasks]
        differing = list(
            dict.fromkeys(
                field for run in having[1:] for field in differences(having[0], run, task)
            )
        )
        if "n" in differing and "sample_ids_sha256" in differing:
            differing.remove("sample_ids_sha256")
        if not differing:
            continue
        differing.sort(key=lambda field: field != "n")  # the plainest cause first
        detail = ", ".join(describe_run(run, task, differing) for run in having)
        warnings.append(
            f"{task}: runs differ in {describe(differing)} ({detail}); "
            "its columns do not compare like with like"
        )
    return warnings


def describe_run(run: RunData, task: str, fields: list[str]) -> str:
    """A run's name, with its own values of the differing fields that have one."""
    values = []
    if "n" in fields or "sample_ids_sha256" in fields:
        values.append(f"n={run.manifest.tasks[task].n}")
    if DECODING in fields:
        values.append(f"max_new_tokens={run.manifest.decoding.max_new_tokens}")
    return f"{run.name}: {' '.join(values)}" if values else run.name


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
                if (task, metric) not in columns and not is_breakdown(metric):
                    columns.append((task, metric))
    method = correction_of(runs[0])
    tested, family = versus_baseline(entries, columns, method)
    own_base_verdicts = versus_own_base(entries, columns, method)
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
                "own_base": own_base_verdicts.get(entry.label),
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


def own_base(entry: Entry, entries: list[Entry]) -> Entry | None:
    """The model of the same run a tuned entry was made from: the same base model, with no
    adapter and no training; None for a model that is not tuned or whose base is absent."""
    mine = entry.run.model_entry(entry.model)
    if mine is None or (mine.adapter is None and mine.train is None):
        return None
    for other in entries:
        theirs = other.run.model_entry(other.model) if other.run is entry.run else None
        if (
            theirs is not None
            and theirs.model == mine.model
            and not (theirs.adapter or theirs.train)
        ):
            return other
    return None


def versus_own_base(
    entries: list[Entry], columns: list[tuple[str, str]], method: Correction
) -> dict[str, dict[str, Any]]:
    """Each tuned model against its own base on the headline metric of every task both have
    (adjusted together, a family of their own): how many better, worse, alike."""
    pairs = [(entry, base) for entry in entries if (base := own_base(entry, entries))]
    made: list[Comparison] = []
    for entry, base in pairs:
        resamples, seed = entry.run.manifest.bootstrap_settings()
        for task in dict.fromkeys(task for task, _ in columns):
            if not (entry.has(task) and base.has(task)):
                continue
            metric = primary_metric([m for t, m in columns if t == task])
            found = comparisons_for(task, base, [entry], [metric], seed, resamples)[entry.label]
            made += found if isinstance(found, list) else []
    verdicts: dict[str, dict[str, Any]] = {}
    for comparison in corrected(made, method):
        counts = verdicts.setdefault(
            comparison.candidate,
            {"base": comparison.baseline, "better": 0, "worse": 0, "same": 0, "details": []},
        )
        counts[{"better": "better", "worse": "worse"}.get(comparison.verdict, "same")] += 1
        counts["details"].append(
            f"{comparison.task} {comparison.metric} {comparison.difference:+.4f} "
            f"({comparison.verdict})"
        )
    return verdicts


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
