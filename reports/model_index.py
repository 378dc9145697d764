"""The hub's ``model-index`` metadata for one model of a run, so a model card on the hub shows
the run's numbers (task, dataset, metric, value) in its evaluation widget.

Values are results.json's, in its units (accuracy and ROUGE 0-1, BLEU 0-100). The dataset is
named by the hub copy the run read (with its pinned revision) where it read one; otherwise by
the task, with the sha256 of the data files it read as the dataset's argument, since no hub
revision names those files.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml

from medharness.core.errors import UserError
from medharness.core.records import TaskIdentity
from medharness.reports.runs import RunData
from medharness.tasks.metrics import is_metric
from medharness.tasks.metrics import metric as metric_of

HUB_PREFIX = "hub:"
# the hub's metric types (its evaluate metric ids) for medharness's metrics
METRIC_TYPES = {
    "acc": "accuracy",
    "rouge1": "rouge",
    "rouge2": "rouge",
    "rougeL": "rouge",
    "rougeLsum": "rouge",
    "bleu": "bleu",
}
TASK_TYPES = {"multiple_choice": "multiple-choice", "generate": "text-generation"}


def dataset_of(task: str, identity: TaskIdentity) -> dict[str, Any]:
    """The ``dataset`` entry: the hub copy and revision where the run read one."""
    hub = [label for label in identity.data_sha256 if label.startswith(HUB_PREFIX)]
    if hub:
        repo, _, revision = hub[0].removeprefix(HUB_PREFIX).partition("@")
        return {"type": repo, "name": identity.summary, "split": "test", "revision": revision}
    combined = "\n".join(f"{k} {v}" for k, v in sorted(identity.data_sha256.items()))
    return {
        "type": task,
        "name": identity.summary,
        "split": "test",
        "args": {"data_sha256": hashlib.sha256(combined.encode()).hexdigest()},
    }


def model_index(run: RunData, model: str) -> list[dict[str, Any]]:
    """``model-index`` of ``model``: one result per task, every metric of it beside."""
    if model not in run.models:
        raise UserError(f"{run.path}: no model {model!r}; models: {', '.join(run.models)}")
    results = []
    for task, result in run.results.results[model].items():
        identity = run.manifest.tasks[task]
        metrics = [
            {
                "type": METRIC_TYPES.get(name, name),
                "name": metric_of(name).display_name if is_metric(name) else name,
                "value": value.value,
                "config": name,
                "verified": False,
            }
            for name, value in result.metrics.items()
        ]
        results.append(
            {
                "task": {"type": TASK_TYPES.get(identity.kind, identity.kind), "name": task},
                "dataset": dataset_of(task, identity),
                "metrics": metrics,
            }
        )
    return [{"name": model, "results": results}]


def front_matter(run_dir: Path, model: str | None) -> str:
    """A model card's YAML header holding the ``model-index`` of ``model`` (by default the
    run's last model, the candidate)."""
    run = RunData.open(run_dir)
    index = model_index(run, model or run.models[-1])
    return "---\n" + yaml.safe_dump({"model-index": index}, sort_keys=False) + "---\n\n"
