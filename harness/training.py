"""Train the models of a config that say ``train:``, reusing every training already done.

A training is identified by a key over what determines its result (base weights, adapter,
training settings, training data hashes). Its folder ``train/<model>/`` is reused when its
saved key matches, whether it sits in the run being assembled (a resumed run) or in the
finished run directory of an earlier attempt (a re-run, or ``medharness train`` before
``medharness run``). Sweeps train every point under ``train/<model>/sweep/<i>/``, score it
on the MedQuAD validation split and keep the best. Validation during a training (``eval_steps``)
scores the model being trained with the same backend code and decoding as the evaluation.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medharness.config import ModelEntry, RunConfig
from medharness.core.cache import weights_sha256
from medharness.core.distributed import is_main_process
from medharness.core.errors import UserError
from medharness.core.io import write_json_atomic
from medharness.core.quiet import without_library_renames
from medharness.core.rundir import RunDir
from medharness.data import DataRoot, verify_checksums
from medharness.evaluate import evaluate_samples, load_entry
from medharness.models.builtin import builtin_model_dir
from medharness.models.hf import HFModel
from medharness.models.specs import BUILTIN_MODEL
from medharness.tasks.base import Sample, Task
from medharness.tasks.metrics import aggregate
from medharness.tasks.metrics import metric as metric_of
from medharness.trainers.data import (
    TrainingSet,
    medqa_dev_examples,
    medqa_train_examples,
    medquad_examples,
)
from medharness.trainers.sft import Validation
from medharness.trainers.spec import DONE_FILE, TrainSpec

TRAIN_FORMAT = 1  # bump when the meaning of a saved training folder changes


@dataclass(frozen=True)
class Trained:
    """Where an entry's trained weights are, in the form ``load_model`` takes them."""

    model: str
    adapter: str | None
    summary: dict[str, Any]


def train_models(
    config: RunConfig, data_root: DataRoot, staging: Path, previous: Path | None
) -> dict[str, Trained]:
    """Train (or reuse) every entry with ``train:``; return the weights to evaluate per name.

    On the non-main ranks of a distributed launch the result is empty: they only train."""
    trained: dict[str, Trained] = {}
    for entry in config.models:
        if entry.train is None:
            continue
        spec = entry.train
        training = training_set(spec, data_root)
        relative = RunDir.training_of(entry.name)
        if spec.sweep is None:
            validation = validation_for(config, entry, spec, data_root)
            outcome = ensure_trained(entry, spec, training, staging, relative, previous, validation)
        else:
            outcome = run_sweep(
                config, entry, spec, training, data_root, staging, relative, previous
            )
        if outcome is not None and is_main_process():
            trained[entry.name] = outcome
    return trained


def training_set(spec: TrainSpec, data_root: DataRoot) -> TrainingSet:
    if spec.data == "medqa_dev":
        training = medqa_dev_examples(data_root.path, spec.limit)
    elif spec.data == "medqa_train":
        training = medqa_train_examples(data_root.path, spec.limit, spec.source)
    else:
        training = medquad_examples(data_root.path, spec.limit, spec.disclaimer)
    if not training.examples:
        raise UserError(f"no training examples in {data_root.path} for data: {spec.data}")
    subdir = data_folder(spec)
    verify_checksums(data_root.path / subdir, subdir, training.file_hashes)
    return training


def data_folder(spec: TrainSpec) -> str:
    """The dataset folder of the data root a training reads (and validates on)."""
    return spec.data.split("_")[0]


def validation_for(
    config: RunConfig, entry: ModelEntry, spec: TrainSpec, data_root: DataRoot
) -> Validation | None:
    """What a training with ``eval_steps`` validates on: the first ``eval_limit`` MedQuAD
    validation pairs, or MedQA dev questions (held out from medqa_train by the test check)."""
    from medharness.tasks.medqa import MEDQA_4OPT, load_medqa_file
    from medharness.tasks.medquad import MEDQUAD_GEN, load_split

    if spec.eval_steps is None:
        return None
    root = data_root.path
    task: Task
    generative = spec.data == "medquad"
    if generative:
        examples = medquad_examples(root, spec.eval_limit, spec.disclaimer, "validation")
    else:
        examples = medqa_dev_examples(root, spec.eval_limit)
    metric = spec.eval_metric
    if metric is None:
        return Validation(examples.examples)
    if generative:  # the questions scored for the metric are only read when one is asked for
        task, samples = MEDQUAD_GEN, load_split(root / "medquad", "validation").samples
    else:
        task, samples = MEDQA_4OPT, load_medqa_file(root / "medqa" / "us_4opt_dev.jsonl", 4)
    chosen = samples[: spec.eval_limit]

    def score(model: Any, tokenizer: Any) -> float:
        return validation_metric(config, entry, task, chosen, metric, model, tokenizer)

    return Validation(examples.examples, score)


def validation_metric(
    config: RunConfig,
    entry: ModelEntry,
    task: Task,
    samples: list[Sample],
    metric: str,
    model: Any,
    tokenizer: Any,
) -> float:
    """``metric`` of the model being trained, answered as the evaluation answers."""
    scored = HFModel(
        model=model,
        tokenizer=tokenizer,
        source=entry.model,
        batch_size=entry.batch_size if isinstance(entry.batch_size, int) else 8,
        system_prompt=entry.system_prompt,
    )
    rows = evaluate_samples(
        scored,
        task,
        samples,
        max_new_tokens=config.generation.max_new_tokens,
        label=f"{entry.name} validation",
    )
    summary = metric_of(metric).summarise(
        rows, resamples=config.bootstrap_resamples, seed=config.seed
    )
    return summary.value


def base_source(entry: ModelEntry) -> str:
    if entry.model == BUILTIN_MODEL:
        return str(builtin_model_dir())
    path = Path(entry.model).expanduser()
    return str(path) if path.is_dir() else entry.model


def training_identity(entry: ModelEntry, spec: TrainSpec, training: TrainingSet) -> dict[str, Any]:
    """What the trained weights depend on; its hash decides whether a folder can be reused."""
    source = Path(base_source(entry))
    adapter = Path(entry.adapter).expanduser() if entry.adapter else None
    identity = {
        "format": TRAIN_FORMAT,
        "base_model": entry.model,
        "base_weights_sha256": weights_sha256(source) if source.is_dir() else None,
        "adapter": entry.adapter,
        "adapter_sha256": weights_sha256(adapter) if adapter and adapter.is_dir() else None,
        "train": spec.model_dump(mode="json", exclude={"sweep"}),
        "data_sha256": training.file_hashes,
        "examples": len(training.examples),
    }
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return {"key": key, **identity}


def finished_key(folder: Path) -> str | None:
    try:
        return str(json.loads((folder / DONE_FILE).read_text(encoding="utf-8"))["key"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def training_finished(entry: ModelEntry, data_root: DataRoot, folders: list[Path]) -> bool:
    """Whether every training ``entry`` asks for (each point of a sweep) is finished in one
    of ``folders`` (run directories), so that ``train_models`` would train nothing."""
    assert entry.train is not None
    spec = entry.train
    training = training_set(spec, data_root)
    relative = RunDir.training_of(entry.name)
    if spec.sweep is None:
        points = [(spec, relative)]
    else:
        points = [(point, where) for _, point, where in sweep_points(spec, relative)]
    for point, where in points:
        key = training_identity(entry, point, training)["key"]
        if all(finished_key(folder / where) != key for folder in folders):
            return False
    return True


def sweep_points(spec: TrainSpec, relative: Path) -> list[tuple[dict[str, Any], TrainSpec, Path]]:
    """Each point of a sweep: its parameters, its training's spec, and its folder."""
    assert spec.sweep is not None
    return [
        (point, spec.with_point(point), relative / "sweep" / str(index))
        for index, point in enumerate(spec.sweep.combinations())
    ]


def ensure_trained(
    entry: ModelEntry,
    spec: TrainSpec,
    training: TrainingSet,
    staging: Path,
    relative: Path,
    previous: Path | None,
    validation: Validation | None = None,
) -> Trained | None:
    """The finished training at ``relative`` in the run being assembled: already there,
    brought over from the earlier run directory ``previous``, or trained now."""
    from medharness.trainers.sft import train

    identity = training_identity(entry, spec, training)
    folder = staging / relative
    if finished_key(folder) != identity["key"] and previous is not None:
        earlier = previous / relative
        if finished_key(earlier) == identity["key"] and is_main_process():
            link_tree(earlier, folder)
    if finished_key(folder) == identity["key"]:
        print(f"[{entry.name}] reusing the finished training in {relative}", file=sys.stderr)
    else:
        print(f"[{entry.name}] training ({spec.recipe}) on {training.description}", file=sys.stderr)
        with without_library_renames():
            wrote = train(
                spec,
                base_model=base_source(entry),
                adapter=entry.adapter,
                training=training,
                folder=folder,
                identity=identity,
                validation=validation,
            )
        if not wrote:
            return None
    summary = json.loads((folder / DONE_FILE).read_text(encoding="utf-8"))
    if spec.recipe == "full":
        return Trained(model=str(folder / "model"), adapter=None, summary=summary)
    return Trained(model=entry.model, adapter=str(folder / "adapter"), summary=summary)


def link_tree(source: Path, target: Path) -> None:
    """Bring a finished training into the run being assembled: hard links, no copy of
    gigabytes, unless the two are on different file systems."""
    partial = target.with_name(f".{target.name}.link")
    shutil.rmtree(partial, ignore_errors=True)

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, partial, copy_function=link)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)


def run_sweep(
    config: RunConfig,
    entry: ModelEntry,
    spec: TrainSpec,
    training: TrainingSet,
    data_root: DataRoot,
    staging: Path,
    relative: Path,
    previous: Path | None,
) -> Trained | None:
    """Train every point, score each on the validation split, keep the best by the metric."""
    from medharness.tasks.medquad import MEDQUAD_GEN, load_split

    assert spec.sweep is not None
    sweep = spec.sweep
    validation = load_split(data_root.path / "medquad", "validation").samples
    validation = validation[: sweep.validation_limit]
    points: list[dict[str, Any]] = []
    outcomes: list[Trained] = []
    for point, point_spec, where in sweep_points(spec, relative):
        outcome = ensure_trained(entry, point_spec, training, staging, where, previous)
        if outcome is None or not is_main_process():
            continue
        value = validation_score(config, entry, outcome, validation, sweep.metric)
        print(f"[{entry.name}] sweep point {point}: {sweep.metric} {value:.4f}", file=sys.stderr)
        points.append({"params": point, "value": value, "n": len(validation)})
        outcomes.append(outcome)
    if not is_main_process():
        return None
    folder = staging / relative
    values = [float(point["value"]) for point in points]
    best = values.index(max(values))
    chosen = Path(outcomes[best].adapter or outcomes[best].model).parent
    write_json_atomic(
        folder / "sweep.json",
        {
            "metric": sweep.metric,
            "split": "validation",
            "best": best,
            "points": points,
            "task": MEDQUAD_GEN.name,
            "max_new_tokens": config.generation.max_new_tokens,
        },
    )
    shutil.copyfile(chosen / "log.jsonl", folder / "log.jsonl")
    return Trained(
        model=outcomes[best].model,
        adapter=outcomes[best].adapter,
        summary={**outcomes[best].summary, "sweep_point": best},
    )


def validation_score(
    config: RunConfig, entry: ModelEntry, trained: Trained, samples: list[Any], metric: str
) -> float:
    """The sweep metric of one point, cached beside its weights (a resumed sweep skips it)."""
    from medharness.tasks.medquad import MEDQUAD_GEN

    folder = Path(trained.adapter or trained.model).parent
    cache = folder / "validation.json"
    ids = hashlib.sha256("\n".join(s.doc_id for s in samples).encode()).hexdigest()
    wanted = {
        "key": trained.summary["key"],
        "samples_sha256": ids,
        "max_new_tokens": config.generation.max_new_tokens,
    }
    if cache.is_file():
        saved = json.loads(cache.read_text(encoding="utf-8"))
        if {k: saved.get(k) for k in wanted} == wanted and metric in saved["metrics"]:
            return float(saved["metrics"][metric]["value"])
    model = load_entry(entry, trained.model, trained.adapter)
    rows = evaluate_samples(
        model,
        MEDQUAD_GEN,
        samples,
        max_new_tokens=config.generation.max_new_tokens,
        label=f"{entry.name} validation",
    )
    result = aggregate(MEDQUAD_GEN, rows, resamples=config.bootstrap_resamples, seed=config.seed)
    write_json_atomic(
        cache,
        {**wanted, "metrics": {k: v.model_dump(mode="json") for k, v in result.metrics.items()}},
    )
    return result.metrics[metric].value
