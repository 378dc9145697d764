"""``manifest.json``: everything that makes a run's results reproducible — the config as
resolved, each task's identity, each model's record, the data, seeds, decoding, package
versions, the commit, the machine and where the time went."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from pydantic import JsonValue

from medharness import __version__
from medharness.config import ModelEntry, RunConfig
from medharness.core.distributed import process_count
from medharness.core.records import DataRecord, Decoding, ExecutorRecord, Manifest, ModelRecord
from medharness.core.rundir import RunDir
from medharness.run.plan import Plan
from medharness.run.state import RunState, Timings
from medharness.training import Trained

PACKAGES = ("torch", "transformers", "peft", "lm_eval", "rouge_score", "sacrebleu", "numpy")


def model_record(
    description: dict[str, JsonValue],
    entry: ModelEntry,
    trained: dict[str, Trained],
    run_dir: RunDir,
) -> ModelRecord:
    """The manifest's record of a model: the backend's description, how training made it."""
    record = dict(description)
    if process_count() > 1:
        record["processes"] = process_count()
    weights = trained.get(entry.name)
    if weights:
        record.update(trained_record(weights, run_dir))
    return ModelRecord.model_validate(record)


def trained_record(weights: Trained, run_dir: RunDir) -> dict[str, JsonValue]:
    """How a trained model came to be, with paths relative to the run directory."""
    relative: dict[str, JsonValue] = {
        key: str(Path(value).relative_to(run_dir.path))
        for key, value in (("model", weights.model), ("adapter", weights.adapter))
        if value and Path(value).is_relative_to(run_dir.path)
    }
    return {**relative, "trained": weights.summary}


def build_manifest(
    plan: Plan, state: RunState, timings: Timings, executor: ExecutorRecord
) -> Manifest:
    """The manifest of a run whose every model is scored, and judged where it has a jury."""
    from medharness.tasks.medquad import SPLIT_SEED

    config, data_root, prepared, started = plan.config, plan.data_root, plan.prepared, plan.started

    return Manifest(
        medharness_version=__version__,
        git_sha=git_sha(),
        command=list(sys.argv),
        started=datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
        finished=datetime.now(UTC).isoformat(timespec="seconds"),
        config=config.model_dump(mode="json"),
        tasks={item.task.name: item.identity() for item in prepared},
        models=state.models,
        pair_keys=state.pairs,  # a later run reuses a sample log whose key is unchanged
        data=DataRecord(
            root=str(data_root.path),
            origin=data_root.origin,
            sha256=plan.file_hashes,
            skipped={item.task.name: item.skipped for item in prepared if item.skipped},
        ),
        seeds={"bootstrap": config.seed, "medquad_split": SPLIT_SEED},
        decoding=Decoding(
            strategy=decoding_strategy(config), max_new_tokens=config.generation.max_new_tokens
        ),
        versions={"python": platform.python_version(), **package_versions()},
        hardware=hardware(),
        timings_s=timings.record(time.time() - started),
        judges=plan.jury.record() if plan.jury else {},
        executor=executor,
    )


def decoding_strategy(config: RunConfig) -> str:
    """``greedy``, or which models sampled their answers and how (their ``sampling:``)."""
    sampled = [
        f"{entry.name} ({entry.sampling.describe()})"
        for entry in config.models
        if entry.sampling is not None and entry.sampling.sampled
    ]
    return "greedy" if not sampled else "greedy; sampled: " + ", ".join(sampled)


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_sha() -> str | None:
    """The commit of the medharness source tree, when it runs from a git checkout."""
    source = Path(__file__).resolve().parents[2]
    try:
        result = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None


def hardware() -> dict[str, str | int | bool | None]:
    """The machine; torch's view of it (threads, CUDA, GPU) when this process ran a model.
    A run whose every sample log was reused does not import torch (~3 s) just to say so."""
    info: dict[str, str | int | bool | None] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.is_available()
        if info["cuda"]:
            info["gpu"] = torch.cuda.get_device_name(0)
    return info
