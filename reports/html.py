"""The run's single-file HTML report: per task, models x metrics with CIs and deltas."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from harness.io import read_jsonl

EXAMPLES_PER_TASK = 3
# Metrics stored on a 0-1 scale are shown in points (x100), so every column reads 0-100.
HUNDREDFOLD = {"acc", "rouge1", "rouge2", "rougeL", "rougeLsum"}


def points(metric: str, value: float) -> float:
    return value * 100 if metric in HUNDREDFOLD else value


def environment() -> Environment:
    return Environment(
        loader=PackageLoader("reports", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def metric_cells(metrics: dict[str, Any], baseline: dict[str, Any] | None) -> list[dict[str, Any]]:
    cells = []
    for name, metric in metrics.items():
        value = points(name, metric["value"])
        low, high = (points(name, bound) for bound in metric["ci95"])
        cell: dict[str, Any] = {"value": value, "low": low, "high": high}
        if baseline is not None and name in baseline:
            base = points(name, baseline[name]["value"])
            cell["delta"] = value - base
            cell["relative"] = (value - base) / base * 100 if base else None
        cells.append(cell)
    return cells


def choice_probabilities(loglikelihoods: list[float | None]) -> list[float | None]:
    """Softmax over the options' log-likelihoods, as a reader's 'how sure was it'."""
    if any(v is None for v in loglikelihoods):
        return [None] * len(loglikelihoods)
    values = [float(v) for v in loglikelihoods if v is not None]
    top = max(values)
    weights = [math.exp(v - top) for v in values]
    total = sum(weights)
    return [w / total for w in weights]


def examples(run_dir: Path, task: str, models: list[str]) -> list[dict[str, Any]]:
    per_model = {
        model: list(read_jsonl(run_dir / "samples" / model / f"{task}.jsonl"))[:EXAMPLES_PER_TASK]
        for model in models
    }
    shown = []
    for index, row in enumerate(per_model[models[0]]):
        answers = []
        for model in models:
            other = per_model[model][index]
            answer = {"model": model, "text": other["prediction"], "metrics": other["metrics"]}
            if "loglikelihoods" in other and other["chosen"] >= 0:
                answer["probability"] = choice_probabilities(other["loglikelihoods"])[
                    other["chosen"]
                ]
            answers.append(answer)
        shown.append(
            {
                "doc_id": row["doc_id"],
                "prompt": row["prompt"],
                "target": row["target"],
                "answers": answers,
            }
        )
    return shown


def render_run_report(run_dir: Path) -> str:
    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    baseline_name = results["baseline"]
    models = list(results["results"])
    task_names = list(results["results"][baseline_name])
    sections = []
    for task in task_names:
        baseline = results["results"][baseline_name][task]["metrics"]
        rows = []
        for model in models:
            entry = results["results"][model][task]
            rows.append(
                {
                    "model": model,
                    "n": entry["n"],
                    "cells": metric_cells(
                        entry["metrics"], None if model == baseline_name else baseline
                    ),
                }
            )
        sections.append(
            {
                "name": task,
                "info": manifest["tasks"][task],
                "metrics": list(baseline),
                "rows": rows,
                "settings": results["results"][baseline_name][task].get("settings", {}),
                "examples": examples(run_dir, task, models),
            }
        )
    return (
        environment()
        .get_template("report.html.j2")
        .render(
            run_name=run_dir.name.removeprefix(".").removesuffix(".partial"),
            baseline=baseline_name,
            models=models,
            sections=sections,
            manifest=manifest,
            manifest_json=json.dumps(manifest, indent=2, ensure_ascii=False),
        )
    )
