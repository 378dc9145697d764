"""What a run will do, settled before any model loads: every entry checked, every task's
samples, and for each (model, task) its pair key and whether a sample log with that key is
already there (in staging, or in the finished run being replaced) or still to be scored."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import JsonValue

from medharness.config import ModelEntry, RunConfig
from medharness.core.distributed import from_main, is_main_process, process_count
from medharness.core.errors import UserError
from medharness.core.io import read_jsonl_prefix, resolve_inside, write_jsonl_atomic
from medharness.core.records import TaskIdentity
from medharness.core.rundir import RunDir
from medharness.data import DataRoot, load_task_data, resolve_data_root
from medharness.evaluate import answers_identity
from medharness.judge import Jury
from medharness.models.fake import FakeModel
from medharness.models.hub import require_hub_model
from medharness.models.identity import served_identity
from medharness.models.loading import LoadSettings
from medharness.models.specs import BUILTIN_MODEL, fake_script, is_hub_id, looks_like_path
from medharness.ray_executor import require_ray
from medharness.run.state import PreviousRun, RunState, pair_name
from medharness.tasks import LoadedData, Sample, Task
from medharness.training import Trained


@dataclass(frozen=True)
class PreparedTask:
    task: Task
    samples: list[Sample]
    file_hashes: dict[str, str]
    skipped: dict[str, int]  # rows of the data left out, by reason

    def identity(self) -> TaskIdentity:
        """What makes results on this task comparable with another run's."""
        ids = "\n".join(sample.doc_id for sample in self.samples).encode()
        return TaskIdentity(
            version=self.task.version,
            kind=self.task.kind,
            summary=self.task.summary,
            prompt=self.task.prompt_template,
            n=len(self.samples),
            sample_ids_sha256=hashlib.sha256(ids).hexdigest(),
            data_sha256=self.file_hashes,
        )


@dataclass(frozen=True)
class Plan:
    """A run's config checked and its tasks prepared: what every later step reads."""

    config: RunConfig
    data_root: DataRoot
    prepared: list[PreparedTask]
    file_hashes: dict[str, str]  # every data file read, by name
    jury: Jury | None
    target: Path  # the run directory, once written
    started: float


def make_plan(
    config: RunConfig, base_dir: Path, output_dir: Path | None, limit: int | None
) -> Plan:
    """Everything a run can refuse before any work: the executor, every model and judge
    entry, the rubric, each task's data (``limit`` caps samples and trainings alike)."""
    started = time.time()
    if config.executor == "ray":
        require_ray()
        if process_count() > 1:
            raise UserError("executor ray sends work from one process: start it without a launcher")
    if limit is not None:
        config = limited_trainings(config, limit)
    data_root = resolve_data_root(config.data_dir, base_dir)
    for entry in [*config.models, *config.judges]:
        check_model_entry(entry)
    jury = Jury.of(config, base_dir)  # a bad rubric is refused before any work
    prepared, file_hashes = prepare_tasks(config, data_root, limit, base_dir)
    out = output_dir or resolve_inside(base_dir, config.output_dir)
    return Plan(config, data_root, prepared, file_hashes, jury, out / config.name, started)


@dataclass(frozen=True)
class ModelKey:
    """What a model's answers depend on: its entry and weights, what training made of it;
    and how it answers multiple choice, which decides the token budgets that count."""

    identity: dict[str, JsonValue]
    multiple_choice: str


@dataclass(frozen=True)
class Pending:
    """The work left once the plan is made: model -> tasks it still has to be scored on,
    with what scoring them needs."""

    config: RunConfig
    prepared: list[PreparedTask]
    run_dir: RunDir
    trained: dict[str, Trained]
    tasks: dict[str, list[str]]

    def of(self, entry: ModelEntry) -> list[PreparedTask]:
        return [item for item in self.prepared if item.task.name in self.tasks[entry.name]]


def limited_trainings(config: RunConfig, limit: int) -> RunConfig:
    """``--limit`` applied to trainings too: at most ``limit`` training examples and sweep
    validation questions, so a quick look at a config also trains quickly."""
    models = []
    for entry in config.models:
        spec = entry.train
        if spec is not None:
            sweep = spec.sweep
            if sweep is not None:
                validation = min(limit, sweep.validation_limit)
                sweep = sweep.model_copy(update={"validation_limit": validation})
            capped = min(limit, spec.limit or limit)
            print(
                f"[{entry.name}] --limit {limit}: training on at most {capped} examples",
                file=sys.stderr,
            )
            update = {"limit": capped} | ({"sweep": sweep} if sweep is not None else {})
            entry = entry.model_copy(update={"train": spec.model_copy(update=update)})
        models.append(entry)
    return config.model_copy(update={"models": models})


def check_model_entry(entry: ModelEntry) -> None:
    """Catch missing local files and unreachable servers before any model is loaded or any
    work is done."""
    spec = entry.model
    try:
        served_identity(spec, LoadSettings.of(entry))
    except UserError as exc:
        raise UserError(f"model {entry.name}: {exc}") from None
    script = fake_script(spec)
    if script is not None:
        if not script.is_file():
            raise UserError(f"model {entry.name}: fake model script not found: {script}")
        FakeModel.from_file(script)  # a bad script is refused before any work
    elif spec != BUILTIN_MODEL and looks_like_path(spec) and not Path(spec).expanduser().is_dir():
        raise UserError(f"model {entry.name}: model path does not exist: {spec}")
    adapter = entry.adapter
    if adapter and looks_like_path(adapter) and not Path(adapter).expanduser().exists():
        raise UserError(f"model {entry.name}: adapter path does not exist: {adapter}")
    try:
        if is_hub_id(spec):
            require_hub_model(spec)
        if adapter and is_hub_id(adapter):
            require_hub_model(adapter, "adapter")
    except UserError as exc:
        raise UserError(f"model {entry.name}: {exc}") from None
    if entry.train is not None:
        from medharness.trainers.sft import check_runnable

        try:
            check_runnable(entry.train)
        except UserError as exc:
            raise UserError(f"model {entry.name}: {exc}") from None


def prepare_tasks(
    config: RunConfig, data_root: DataRoot, limit: int | None, base_dir: Path
) -> tuple[list[PreparedTask], dict[str, str]]:
    prepared = []
    file_hashes: dict[str, str] = {}
    for entry in config.tasks:
        task = entry.task(base_dir)
        loaded = suite_member_data(config, task, data_root)
        caps = [cap for cap in (limit, config.task_limit(entry)) if cap is not None]
        samples = loaded.samples[: min(caps)] if caps else loaded.samples
        if not samples:
            raise UserError(f"task {task.name}: no samples to evaluate in {data_root.path}")
        prepared.append(PreparedTask(task, samples, loaded.file_hashes, loaded.skipped))
        file_hashes.update(loaded.file_hashes)
    return prepared, file_hashes


def suite_member_data(config: RunConfig, task: Task, data_root: DataRoot) -> LoadedData:
    """A task's data; an error about it names the suites that need the task."""
    try:
        return load_task_data(task, data_root)
    except UserError as exc:
        raise config.naming_suites(task.name, exc) from None


def weights_of(entry: ModelEntry, trained: dict[str, Trained]) -> tuple[str, str | None]:
    """What to load for ``entry``: what its training made, else what it names."""
    weights = trained.get(entry.name)
    return (weights.model, weights.adapter) if weights else (entry.model, entry.adapter)


def model_key(entry: ModelEntry, trained: Trained | None) -> ModelKey:
    """What a model's answers depend on: its entry and weights, what training made of it."""
    identity = {**answers_identity(entry), "trained": trained.summary["key"] if trained else None}
    return ModelKey(identity, entry.multiple_choice)


def pair_key(config: RunConfig, model: ModelKey, item: PreparedTask) -> str:
    """What a finished (model, task) sample log depends on; reused only while it is equal."""
    identity = {
        **model.identity,
        "task": item.identity().model_dump(mode="json"),
        "max_new_tokens": config.generation.max_new_tokens,
    }
    budget = {"generate": "choice_max_new_tokens", "cot": "cot_max_new_tokens"}
    parsed = budget.get(model.multiple_choice)
    if parsed and item.task.kind == "multiple_choice":
        identity[parsed] = getattr(config.generation, parsed)
    if item.task.reasoned:
        identity["cot_max_new_tokens"] = config.generation.cot_max_new_tokens
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def pending_work(
    config: RunConfig,
    prepared: list[PreparedTask],
    run_dir: RunDir,
    trained: dict[str, Trained],
    previous: PreviousRun | None,
    state: RunState,
) -> Pending:
    """Every model's tasks still to score, as the main process finds them (the others of a
    launch are told)."""
    tasks: dict[str, list[str]] = {}
    for entry in config.models:
        mine = []
        if is_main_process():
            mine = pending_tasks(config, entry, prepared, run_dir, trained, previous, state)
        tasks[entry.name] = from_main(mine)
    return Pending(config, prepared, run_dir, trained, tasks)


def pending_tasks(
    config: RunConfig,
    entry: ModelEntry,
    prepared: list[PreparedTask],
    run_dir: RunDir,
    trained: dict[str, Trained],
    previous: PreviousRun | None,
    state: RunState,
) -> list[str]:
    """The tasks ``entry`` still has to be scored on. Logs made under another pair key are
    dropped; a finished run's log with an equal key is reused."""
    pending = []
    identity = model_key(entry, trained.get(entry.name))  # hashes weights: once
    for item in prepared:
        key = pair_key(config, identity, item)
        final = run_dir.sample_log(entry.name, item.task.name)
        pair = pair_name(entry.name, item.task.name)
        if state.pairs.get(pair) != key:
            for stale in [final, *run_dir.partial_logs(entry.name, item.task.name)]:
                stale.unlink(missing_ok=True)
            state.pairs[pair] = key
            forget_units(run_dir, entry.name, item.task.name)
            state.save(run_dir)
        if not final.is_file() and previous is not None and previous.pairs.get(pair) == key:
            earlier = previous.dir.sample_log(entry.name, item.task.name)
            if earlier.is_file() and entry.name in previous.models:
                link_or_copy(earlier, final)
                state.models.setdefault(entry.name, previous.models[entry.name])
                state.save(run_dir)
        if not final.is_file():
            pending.append(item.task.name)
    return pending


def forget_units(run_dir: RunDir, model: str, task: str) -> None:
    """Drop a Ray run's records of units of a (model, task) whose sample logs were dropped."""
    path = run_dir.units
    if path.is_file():
        kept = [u for u in read_jsonl_prefix(path) if (u["model"], u["task"]) != (model, task)]
        write_jsonl_atomic(path, kept)


def link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
