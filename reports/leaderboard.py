"""A leaderboard of every model from many runs, with a warning wherever runs differ in a way
that makes their numbers incomparable (task version, prompt, data, sample set)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medharness.reports.html import entries_of, environment, in_points
from medharness.reports.runs import RunData

IDENTITY_FIELDS = {
    "version": "task versions",
    "prompt": "prompts",
    "data_sha256": "data files",
    "n": "sample counts (limits)",
    "sample_ids_sha256": "sample sets (limits or splits)",
}


def comparability_warnings(runs: list[RunData]) -> list[str]:
    """One line per task whose runs disagree on anything that makes results comparable."""
    warnings = []
    tasks = sorted({task for run in runs for task in run.manifest.tasks})
    for task in tasks:
        seen = [(run.name, run.manifest.tasks[task]) for run in runs if task in run.manifest.tasks]
        for field, words in IDENTITY_FIELDS.items():
            values = {repr(getattr(identity, field)) for _, identity in seen}
            if len(values) > 1:
                detail = ", ".join(
                    f"{name}: n={identity.n}" if field in ("n", "sample_ids_sha256") else name
                    for name, identity in seen
                )
                warnings.append(
                    f"{task}: runs differ in {words} ({detail}); "
                    "its columns do not compare like with like"
                )
    return warnings


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
                "date": manifest.finished,
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
