"""A leaderboard of every model from many runs, with a warning wherever runs differ in a way
that makes their numbers incomparable (task version, prompt, data, sample set)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medharness.reports.comparability import DECODING, describe, differences
from medharness.reports.html import entries_of, environment, in_points
from medharness.reports.runs import RunData


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
    columns: list[tuple[str, str]] = []
    for entry in entries:
        for task, result in entry.run.results.results[entry.model].items():
            for metric in result.metrics:
                if (task, metric) not in columns:
                    columns.append((task, metric))
    rows = []
    for entry in entries:
        results = entry.run.results.results[entry.model]
        cells: list[dict[str, Any] | None] = []
        for task, metric in columns:
            found = results.get(task)
            shown = in_points(metric, found.metrics.get(metric) if found else None)
            cells.append(
                None
                if shown is None
                else {
                    **dict(zip(("value", "low", "high"), shown, strict=True)),
                    "n": results[task].n,
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
            }
        )
    return {
        "columns": columns,
        "rows": rows,
        "warnings": comparability_warnings(runs),
        "runs": runs,
    }


def render_leaderboard(run_dirs: list[Path]) -> str:
    return environment().get_template("leaderboard.html.j2").render(**build_leaderboard(run_dirs))
