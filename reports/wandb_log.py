"""A run logged to Weights & Biases: each metric with its interval in the run's summary, one
table of samples per model and task, and the run's records and report as an artifact.

W&B's own settings apply (``WANDB_API_KEY``, ``WANDB_MODE=offline`` to log without a
network and ``wandb sync`` later, ``WANDB_DIR``); medharness reads no key and writes none.
"""

from __future__ import annotations

from typing import Any

from medharness.core.errors import UserError
from medharness.core.records import InputRow, SampleRow
from medharness.reports.runs import RunData


def wandb_module() -> Any:
    try:
        import wandb
    except ImportError:
        raise UserError(
            "publishing to W&B needs wandb: pip install 'medharness-eval[wandb]'"
        ) from None
    return wandb


def sample_table(wandb: Any, rows: list[SampleRow], asked: dict[str, InputRow]) -> Any:
    """One row per sample: what was asked, the reference, the answer, each metric."""
    metrics = list(dict.fromkeys(name for row in rows for name in row.metrics))
    columns = ["doc_id", "prompt", "reference", "answer", *metrics]
    data = [
        [
            row.doc_id,
            asked[row.doc_id].prompt,
            row.target,
            row.prediction,
            *(row.metrics.get(name) for name in metrics),
        ]
        for row in rows
    ]
    return wandb.Table(columns=columns, data=data)


def log_run(run: RunData, project: str, entity: str | None) -> str:
    """Log ``run`` as one W&B run of ``project``; return its path (entity/project/id)."""
    wandb = wandb_module()
    try:
        logged = wandb.init(
            project=project,
            entity=entity,
            name=run.name,
            job_type="evaluation",
            config=run.manifest.config,
        )
    except Exception as exc:  # W&B's login and network errors have no common base
        raise UserError(f"W&B refused the run: {type(exc).__name__}: {exc}") from None
    with logged:
        for model, tasks in run.results.results.items():
            for task, result in tasks.items():
                for metric, value in result.metrics.items():
                    key = f"{model}/{task}/{metric}"
                    logged.summary[key] = value.value
                    logged.summary[f"{key}_ci95"] = list(value.ci95)
                logged.summary[f"{model}/{task}/n"] = result.n
                rows = run.samples(model, task)
                logged.log({f"samples/{model}/{task}": sample_table(wandb, rows, run.inputs(task))})
        artifact = wandb.Artifact(f"{run.name}-evaluation", type="evaluation")
        for record in run.layout.records_and_report:
            if record.is_file():
                artifact.add_file(str(record), name=record.name)
        logged.log_artifact(artifact)
        path = str(logged.path)
    # the run's file is written by W&B's service process: wait for it, so that everything is
    # on disk (for `wandb sync` after an offline run) once publish returns
    wandb.teardown()
    return path
