"""A run as a hub dataset: the folder that is uploaded (results, manifest, what was asked,
every sample log, the report, training logs; no weights) with a dataset card whose
``configs`` let the hub's viewer and ``datasets.load_dataset`` open each sample log, and the
upload itself. The token is the hub library's own (``HF_TOKEN`` or its login); medharness
never reads it into a file or a log.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from medharness.core.errors import UserError
from medharness.core.folders import copy_plain_tree, whole_or_absent
from medharness.core.http import redact
from medharness.core.rundir import RunDir
from medharness.reports.html import render_markdown
from medharness.reports.runs import RunData

TRAINING_FILES = ("log.jsonl", "train_config.json", "sweep.json")


def dataset_card(run: RunData) -> str:
    """README.md of the dataset: one config per model and task, then the metrics block."""
    configs = [
        {
            "config_name": f"{model}__{task}",
            "data_files": [
                {"split": "test", "path": in_dataset(run, run.layout.sample_log(model, task))}
            ],
        }
        for model in run.models
        for task in run.results.results[model]
    ]
    header = {
        "pretty_name": f"medharness run {run.name}",
        "tags": ["medharness", "evaluation"],
        "configs": configs,
    }
    usage = (
        "Every model's answers are in `samples/MODEL/TASK.jsonl`, what each was asked in "
        "`inputs/TASK.jsonl`; `results.json` and `manifest.json` are the run's own records "
        "(medharness's run directory contract) and `report.html` its report.\n"
    )
    return (
        "---\n"
        + yaml.safe_dump(header, sort_keys=False)
        + "---\n\n"
        + usage
        + "\n"
        + render_markdown([run.path])
    )


def publish_folder(run_dir: Path, folder: Path) -> Path:
    """Write the folder a hub upload sends (``folder`` must not exist); nothing is left at
    ``folder`` unless all of it was written."""
    run = RunData.open(run_dir)
    source = run.layout
    with whole_or_absent(folder) as staging:
        copied = RunDir(staging)
        for record, copy in zip(source.records_and_report, copied.records_and_report, strict=True):
            if source.checked(record).is_file():
                shutil.copy2(record, copy)
        copy_plain_tree(source.inputs, copied.inputs)
        copy_plain_tree(source.samples, copied.samples)
        for path in sorted(source.train.glob("*/*")):
            if path.name in TRAINING_FILES:
                target = copied.training(path.parent.name) / path.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source.checked(path), target)
        (staging / "README.md").write_text(dataset_card(run), encoding="utf-8")
    return folder


def in_dataset(run: RunData, path: Path) -> str:
    """A file's path in the uploaded folder, which keeps the run directory's layout."""
    return path.relative_to(run.path).as_posix()


def upload(folder: Path, repo_id: str, private: bool, message: str) -> str:
    """Send the folder as one commit of dataset ``repo_id`` (made if missing); return the
    commit's revision, which names exactly these files."""
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=folder, repo_type="dataset", commit_message=message
        )
    # the hub library raises its HTTP transport's own errors as well as its HfHubHTTPError
    except Exception as exc:  # one line for the user, whatever failed
        reason = redact((str(exc).splitlines() or [""])[0], [hub_token()])
        raise UserError(f"publishing to {repo_id} failed: {type(exc).__name__}: {reason}") from None
    return str(commit.oid)


def hub_token() -> str | None:
    """The token the hub library sends, to keep it out of any message (a hub error can
    quote the request's headers)."""
    from huggingface_hub import get_token

    return get_token()
