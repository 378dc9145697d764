"""The main job: config -> every model on every task -> a complete run directory.

The run is assembled in a hidden staging folder next to the target and renamed into place
only when every file is written, so ``runs/<name>/`` is either complete or absent.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from medharness import __version__
from medharness.config import ModelEntry, RunConfig
from medharness.core.distributed import (
    from_main,
    gather_on_main,
    is_main_process,
    process_count,
    process_rank,
    released_collectives,
)
from medharness.core.errors import UserError
from medharness.core.folders import (
    exclusive,
    finish,
    is_ours,
    make_owned_folder,
    refuse_foreign,
)
from medharness.core.io import (
    append_jsonl_durable,
    read_jsonl,
    read_jsonl_prefix,
    resolve_inside,
    write_json_atomic,
    write_jsonl_atomic,
    write_record,
    write_text_atomic,
)
from medharness.core.records import (
    SAMPLE_ROWS,
    DataRecord,
    Decoding,
    ExecutorRecord,
    Manifest,
    ResultsFile,
    SuiteResult,
    TaskIdentity,
    TaskResult,
)
from medharness.core.rundir import RunDir, staging_path
from medharness.data import DataRoot, load_task_data, resolve_data_root
from medharness.evaluate import (
    ChoiceScoring,
    answers_identity,
    close_engine,
    evaluate_chunks,
    input_row,
    load_entry,
    shard,
    shared_base_key,
)
from medharness.judge import JudgedLog, Jury, judge_logs
from medharness.models.fake import FakeModel
from medharness.models.hub import require_hub_model
from medharness.models.identity import served_identity
from medharness.models.loading import swap_adapter
from medharness.models.specs import (
    BUILTIN_MODEL,
    absolute_spec,
    fake_script,
    is_hub_id,
    looks_like_path,
)
from medharness.ray_executor import (
    Cluster,
    ModelLoaded,
    ModelWork,
    Scoring,
    TaskWork,
    connected,
    pack,
    require_ray,
)
from medharness.reports.html import render_run_report
from medharness.tasks import LoadedData, Sample, Task
from medharness.tasks.metrics import aggregate
from medharness.tasks.metrics.suites import suite_results
from medharness.trainers.spec import DONE_FILE
from medharness.training import Trained, train_models

PACKAGES = ("torch", "transformers", "peft", "lm_eval", "rouge_score", "sacrebleu", "numpy")


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


def run(
    config: RunConfig,
    *,
    base_dir: Path,
    output_dir: Path | None = None,
    limit: int | None = None,
) -> Path:
    """Execute a run; return its directory. ``limit`` caps every task's sample count and
    every training's examples (the manifest's config records the caps)."""
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
    target = out / config.name
    staging = staging_path(target)
    refuse_foreign(target)  # before any work: never replace what medharness did not make
    made_by_main_process(staging)
    with (
        exclusive(staging) if is_main_process() else contextlib.nullcontext(),
        released_collectives(),
    ):
        return write_run(
            config, data_root, prepared, file_hashes, staging, target, started=started, jury=jury
        )


def write_run(
    config: RunConfig,
    data_root: DataRoot,
    prepared: list[PreparedTask],
    file_hashes: dict[str, str],
    staging: Path,
    target: Path,
    *,
    started: float,
    jury: Jury | None = None,
) -> Path:
    """Train, evaluate and write everything into ``staging``, then rename it to ``target``."""
    try:
        earlier = target if target.is_dir() else None
        with on_cluster(config) as cluster:
            if cluster is not None:
                cluster.train(config, data_root, staging, earlier)
            # every process of a launch trains, and evaluates its share of what training made
            trained = from_main(train_models(config, data_root, staging, earlier))
            if is_main_process():
                for item in prepared:
                    write_jsonl_atomic(
                        RunDir(staging).input_log(item.task.name),
                        (input_row(sample).model_dump(mode="json") for sample in item.samples),
                    )
            results, state, timings = evaluate_all(
                config, prepared, staging, trained, previous_record(target), jury, cluster
            )
            units = read_jsonl_prefix(RunDir(staging).units)
            executor = cluster.record(units) if cluster else ExecutorRecord()
        if not is_main_process():
            return target  # rank 0 writes the run
        write_record(
            RunDir(staging).results,
            ResultsFile(
                baseline=config.models[0].name,
                results=results,
                suites=suites_of_run(config, results, staging),
            ),
        )
        write_record(
            RunDir(staging).manifest,
            build_manifest(
                config, data_root, file_hashes, prepared, state, timings, started
            ).model_copy(update={"judges": jury.record() if jury else {}, "executor": executor}),
        )
        write_text_atomic(RunDir(staging).report, render_run_report(staging))
        if target.exists():
            refuse_foreign(target)
            shutil.rmtree(target)
        finish(staging)
        staging.rename(target)
        # only now: a kill before the rename must still find which logs are finished
        RunDir(target).state.unlink(missing_ok=True)
        RunDir(target).units.unlink(missing_ok=True)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise UserError(
                f"disk full while writing {exc.filename or staging}; finished "
                f"samples are kept in {staging} for the next attempt"
            ) from None
        raise
    finally:
        worth_keeping = [
            *RunDir(staging).samples.rglob("*.jsonl*"),
            *RunDir(staging).train.rglob(DONE_FILE),  # finished trainings
        ]
        if staging.exists() and not worth_keeping and is_main_process():
            shutil.rmtree(staging, ignore_errors=True)  # nothing worth resuming
    return target


def on_cluster(config: RunConfig) -> contextlib.AbstractContextManager[Cluster | None]:
    """The Ray cluster a ``executor: ray`` run sends its work to; none for a local run."""
    return connected(config.ray) if config.executor == "ray" else contextlib.nullcontext()


def limited_trainings(config: RunConfig, limit: int) -> RunConfig:
    """``--limit`` applied to trainings too: at most ``limit`` training examples and sweep
    validation questions, so a quick look at a config also trains quickly."""
    models = []
    for entry in config.models:
        spec = entry.train
        if spec is not None:
            update: dict[str, Any] = {"limit": min(limit, spec.limit or limit)}
            if spec.sweep is not None:
                validation = min(limit, spec.sweep.validation_limit)
                update["sweep"] = spec.sweep.model_copy(update={"validation_limit": validation})
            print(
                f"[{entry.name}] --limit {limit}: training on at most {update['limit']} examples",
                file=sys.stderr,
            )
            entry = entry.model_copy(update={"train": spec.model_copy(update=update)})
        models.append(entry)
    return config.model_copy(update={"models": models})


def train_only(config: RunConfig, *, base_dir: Path, output_dir: Path | None = None) -> Path:
    """``medharness train``: the trainings of a config, in ``<run>/train/``, nothing else.

    Each training folder is complete or absent on its own. A later ``medharness run`` of the
    same config finds them there and evaluates without training again."""
    if not any(entry.train for entry in config.models):
        raise UserError("no model in this config has a train: block; nothing to train")
    data_root = resolve_data_root(config.data_dir, base_dir)
    for entry in config.models:
        check_model_entry(entry)
    out = output_dir or resolve_inside(base_dir, config.output_dir)
    target = out / config.name
    made_by_main_process(target)
    with (
        exclusive(target) if is_main_process() else contextlib.nullcontext(),
        released_collectives(),
    ):
        trained = train_models(config, data_root, target, None)
        run_dir = RunDir(target)
        if trained and run_dir.manifest.is_file():
            recorded = json.loads(run_dir.manifest.read_text(encoding="utf-8")).get("models", {})
            stale = [
                name
                for name, outcome in trained.items()
                if recorded.get(name, {}).get("trained", {}).get("key") != outcome.summary["key"]
            ]
            if stale:  # its results describe trainings that are no longer there
                for path in run_dir.records_and_report:
                    path.unlink(missing_ok=True)
                print(f"{target}: results removed; retrained {', '.join(stale)}", file=sys.stderr)
    return target


def made_by_main_process(folder: Path, timeout_s: float = 600.0) -> None:
    """The folder a run writes, made and marked by the main process of a launch; the other
    processes wait for its marker. Had every process made it, one could find the folder
    another had just created and not yet marked, and refuse it as not medharness's."""
    if is_main_process():
        make_owned_folder(folder)
        return
    deadline = time.monotonic() + timeout_s
    while not is_ours(folder):
        if time.monotonic() > deadline:
            raise UserError(f"{folder} did not appear: the main process did not make it")
        time.sleep(0.05)


def check_model_entry(entry: ModelEntry) -> None:
    """Catch missing local files and unreachable servers before any model is loaded or any
    work is done."""
    spec = entry.model
    try:
        served_identity(spec, entry.base_url, entry.api_key_env, entry.requests)
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


def model_key(entry: ModelEntry, trained: Trained | None) -> dict[str, Any]:
    """What a model's answers depend on: its entry and weights, what training made of it."""
    return {**answers_identity(entry), "trained": trained.summary["key"] if trained else None}


def pair_key(config: RunConfig, model: dict[str, Any], item: PreparedTask) -> str:
    """What a finished (model, task) sample log depends on; reused only while it is equal."""
    identity = {
        **model,
        "task": item.identity().model_dump(mode="json"),
        "max_new_tokens": config.generation.max_new_tokens,
    }
    budget = {"generate": "choice_max_new_tokens", "cot": "cot_max_new_tokens"}
    parsed = budget.get(model["model"].get("multiple_choice"))
    if parsed and item.task.kind == "multiple_choice":
        identity[parsed] = getattr(config.generation, parsed)
    if item.task.reasoned:
        identity["cot_max_new_tokens"] = config.generation.cot_max_new_tokens
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def previous_record(target: Path) -> dict[str, Any]:
    """Pair keys and model records of the finished run now at ``target``, if any."""
    try:
        manifest = Manifest.model_validate_json(RunDir(target).manifest.read_bytes())
    except (OSError, ValueError):
        return {}  # no finished run there, or one this medharness cannot read: nothing reused
    models = {name: record.model_dump(mode="json") for name, record in manifest.models.items()}
    return {"dir": target, "pairs": manifest.pair_keys, "models": models}


def evaluate_all(
    config: RunConfig,
    prepared: list[PreparedTask],
    staging: Path,
    trained: dict[str, Trained],
    previous: dict[str, Any],
    jury: Jury | None = None,
    cluster: Cluster | None = None,
) -> tuple[dict[str, dict[str, TaskResult]], dict[str, Any], dict[str, Any]]:
    """Every model on every task, resuming from whatever an earlier attempt left in staging:
    finished sample logs are reused, partial ones continue after their last full chunk. A
    log of the finished run being replaced is reused when its pair key is unchanged.
    Models are scored here, or on ``cluster`` when there is one.
    The jury, if any, then judges every free-text answer it has no verdict on.
    Under a launcher's N processes each scores its share of every task and rank 0 writes;
    the others return empty-handed after the last model.
    Returns results, the run state (pair keys, model records) and timings."""
    state_path = RunDir(staging).state
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    state.setdefault("pairs", {})
    state.setdefault("models", {})
    timings: dict[str, Any] = {entry.name: {} for entry in config.models}
    pending: dict[str, list[str]] = {}
    for entry in config.models:
        mine = []
        if is_main_process():
            mine = pending_tasks(config, entry, prepared, staging, trained, previous, state)
        pending[entry.name] = from_main(mine)
    evaluation = Evaluation(config, prepared, staging, trained, pending, state, timings)
    if cluster is not None:
        score_on_cluster(cluster, evaluation)
    else:
        for group in shared_bases(config, pending, trained):
            score_here(group, evaluation)
    if not is_main_process():
        return {}, state, timings
    clock = time.time()
    apply_jury(jury, [entry.name for entry in config.models], prepared, staging)
    if jury is not None:
        timings["judging_s"] = round(time.time() - clock, 3)
    results: dict[str, dict[str, TaskResult]] = {entry.name: {} for entry in config.models}
    for entry in config.models:
        for item in prepared:
            final = RunDir(staging).sample_log(entry.name, item.task.name)
            rows = SAMPLE_ROWS.validate_python(list(read_jsonl(final)))
            result = aggregate(
                item.task,
                rows,
                resamples=config.bootstrap_resamples,
                seed=config.seed,
                metadata={sample.doc_id: sample.metadata for sample in item.samples},
            )
            results[entry.name][item.task.name] = result
            print(f"[{entry.name}] {item.task.name}: " + summary_line(result), file=sys.stderr)
    return results, state, timings


def suites_of_run(
    config: RunConfig, results: dict[str, dict[str, TaskResult]], staging: Path
) -> dict[str, dict[str, SuiteResult]]:
    """Every model's result on each suite the config reports, from its tasks' sample logs."""
    if not config.suites:
        return {}
    rows = {
        (model, task): SAMPLE_ROWS.validate_python(
            list(read_jsonl(RunDir(staging).sample_log(model, task)))
        )
        for model in results
        for task in dict.fromkeys(t for members in config.suites.values() for t in members)
    }
    suites = suite_results(
        config.suites, results, rows, resamples=config.bootstrap_resamples, seed=config.seed
    )
    for model, by_suite in suites.items():
        for name, result in by_suite.items():
            print(f"[{model}] {name} (suite): " + summary_line(result), file=sys.stderr)
    return suites


def weights_of(entry: ModelEntry, trained: dict[str, Trained]) -> tuple[str, str | None]:
    """What to load for ``entry``: what its training made, else what it names."""
    weights = trained.get(entry.name)
    return (weights.model, weights.adapter) if weights else (entry.model, entry.adapter)


def model_record(
    description: dict[str, Any], entry: ModelEntry, trained: dict[str, Trained], staging: Path
) -> dict[str, Any]:
    """The manifest's record of a model: the backend's description, how training made it."""
    record = dict(description)
    if process_count() > 1:
        record["processes"] = process_count()
    weights = trained.get(entry.name)
    if weights:
        record.update(trained_record(weights, staging))
    return record


@dataclass(frozen=True)
class Evaluation:
    """What scoring the models reads and writes: the run being assembled and its records."""

    config: RunConfig
    prepared: list[PreparedTask]
    staging: Path
    trained: dict[str, Trained]
    pending: dict[str, list[str]]  # model -> tasks it still has to be scored on
    state: dict[str, Any]  # pair keys and model records (run_state.json)
    timings: dict[str, Any]


def shared_bases(
    config: RunConfig, pending: dict[str, list[str]], trained: dict[str, Trained]
) -> list[list[ModelEntry]]:
    """The entries with work left, those that can share one loaded base together (in the
    order of their first entry), each other alone."""
    groups: dict[str, list[ModelEntry]] = {}
    for entry in config.models:
        if not pending[entry.name]:
            continue
        key = shared_base_key(entry, weights_of(entry, trained)[0])
        if key is None or not config.share_base_models:
            key = "\0alone:" + entry.name
        groups.setdefault(key, []).append(entry)
    return list(groups.values())


def score_here(entries: list[ModelEntry], evaluation: Evaluation) -> None:
    """Models loaded in this process (each process of a launch) and scored on their pending
    tasks. Entries that share a base are served by one engine, each adapter swapped in
    turn; a backend that cannot swap loads each anew."""
    config, staging, trained, state, timings = (
        evaluation.config, evaluation.staging, evaluation.trained, evaluation.state,
        evaluation.timings,
    )  # fmt: skip
    model: Any = None
    adapters = [weights_of(entry, trained)[1] for entry in entries]
    for index, entry in enumerate(entries):
        clock = time.time()
        spec, adapter = weights_of(entry, trained)
        swapped = None if model is None else swap_adapter(model, adapter, entry.allow_pickle)
        if swapped is None:
            if model is not None:
                close_engine(model)
                del model
                gc.collect()
            print(
                f"[{entry.name}] loading {spec}" + (f" + {adapter}" if adapter else ""),
                file=sys.stderr,
            )
            model = load_entry(entry, spec, adapter, later_adapters=adapters[index + 1 :])
        else:
            served = f"adapter {adapter}" if adapter else "no adapter"
            print(f"[{entry.name}] {spec} already loaded: {served} swapped in", file=sys.stderr)
            model = swapped
        state["models"][entry.name] = model_record(model.describe(), entry, trained, staging)
        if is_main_process():
            write_json_atomic(RunDir(staging).state, state)
        timings[entry.name]["load_s"] = round(time.time() - clock, 3)
        for item in evaluation.prepared:
            if item.task.name in evaluation.pending[entry.name]:
                clock = time.time()
                complete_sample_log(config, entry, item, model, staging)
                timings[entry.name][item.task.name + "_s"] = round(time.time() - clock, 3)
    close_engine(model)
    del model
    gc.collect()


def score_on_cluster(cluster: Cluster, evaluation: Evaluation) -> None:
    """Every pending (model, task) scored on the cluster. This process appends each unit's
    rows to the pair's partial log as they come, so a run killed here resumes without them,
    and writes each log once it is whole."""
    config, staging, trained, state, timings = (
        evaluation.config, evaluation.staging, evaluation.trained, evaluation.state,
        evaluation.timings,
    )  # fmt: skip
    logs: dict[tuple[str, str], tuple[PreparedTask, dict[str, Any]]] = {}
    work = []
    for entry in config.models:
        tasks = []
        for item in evaluation.prepared:
            if item.task.name not in evaluation.pending[entry.name]:
                continue
            partial = RunDir(staging).partial_log(entry.name, item.task.name)
            done = {row["doc_id"]: row for row in read_jsonl_prefix(partial)}
            if len(done) == len(item.samples):  # killed before the finished log was written
                write_sample_log(RunDir(staging), entry.name, item.task.name, item.samples, done)
                continue
            logs[entry.name, item.task.name] = (item, done)
            tasks.append(TaskWork(item.task, item.samples, frozenset(done)))
        if not tasks:
            continue
        spec, adapter = weights_of(entry, trained)
        spec, adapter = absolute_spec(spec), absolute_spec(adapter) if adapter else None
        shipped = {
            path: pack(Path(path))
            for path in (spec, adapter)
            if path and Path(path).is_relative_to(staging)
        }
        scoring = Scoring(
            config.generation.max_new_tokens,
            ChoiceScoring.of(entry, config.generation),
            config.generation.cot_max_new_tokens,
            entry.sampling,
        )
        work.append(ModelWork(entry, spec, adapter, tasks, scoring, shipped))
    entries = {entry.name: entry for entry in config.models}
    for event in cluster.score(work):
        if isinstance(event, ModelLoaded):
            entry = entries[event.model]
            state["models"][entry.name] = model_record(event.description, entry, trained, staging)
            write_json_atomic(RunDir(staging).state, state)
            timings[entry.name]["load_s"] = event.load_s
            timings[entry.name]["worker_ready_s"] = event.ready_s
        else:
            unit = event.record
            item, done = logs[unit.model, unit.task]
            append_jsonl_durable(RunDir(staging).partial_log(unit.model, unit.task), event.rows)
            done.update((row["doc_id"], row) for row in event.rows)
            append_jsonl_durable(RunDir(staging).units, [unit.model_dump(mode="json")])
            spent = timings[unit.model].get(unit.task + "_s", 0.0)
            timings[unit.model][unit.task + "_s"] = round(spent + unit.seconds, 3)
            if len(done) == len(item.samples):
                write_sample_log(RunDir(staging), unit.model, unit.task, item.samples, done)


def pending_tasks(
    config: RunConfig,
    entry: ModelEntry,
    prepared: list[PreparedTask],
    staging: Path,
    trained: dict[str, Trained],
    previous: dict[str, Any],
    state: dict[str, Any],
) -> list[str]:
    """The tasks ``entry`` still has to be scored on. Logs made under another pair key are
    dropped; a finished run's log with an equal key is reused."""
    pending = []
    model_identity = model_key(entry, trained.get(entry.name))  # hashes weights: once
    state_path = RunDir(staging).state
    for item in prepared:
        key = pair_key(config, model_identity, item)
        final = RunDir(staging).sample_log(entry.name, item.task.name)
        pair = f"{entry.name}/{item.task.name}"
        if state["pairs"].get(pair) != key:
            for stale in [final, *RunDir(staging).partial_logs(entry.name, item.task.name)]:
                stale.unlink(missing_ok=True)
            state["pairs"][pair] = key
            forget_units(staging, entry.name, item.task.name)
            write_json_atomic(state_path, state)
        if not final.is_file() and previous.get("pairs", {}).get(pair) == key:
            earlier = RunDir(previous["dir"]).sample_log(entry.name, item.task.name)
            if earlier.is_file() and entry.name in previous["models"]:
                link_or_copy(earlier, final)
                state["models"].setdefault(entry.name, previous["models"][entry.name])
                write_json_atomic(state_path, state)
        if not final.is_file():
            pending.append(item.task.name)
    return pending


def forget_units(staging: Path, model: str, task: str) -> None:
    """Drop a Ray run's records of units of a (model, task) whose sample logs were dropped."""
    path = RunDir(staging).units
    if path.is_file():
        kept = [u for u in read_jsonl_prefix(path) if (u["model"], u["task"]) != (model, task)]
        write_jsonl_atomic(path, kept)


def apply_jury(
    jury: Jury | None, models: list[str], prepared: list[PreparedTask], folder: Path
) -> None:
    """Every free-text sample log with the jury's verdicts (or none, without a jury),
    rewritten where that changes it."""
    paths, logs = [], []
    for item in prepared:
        if item.task.kind != "generate":
            continue
        inputs = {sample.doc_id: input_row(sample) for sample in item.samples}
        for name in models:
            path = RunDir(folder).sample_log(name, item.task.name)
            rows = SAMPLE_ROWS.validate_python(list(read_jsonl(path)))
            paths.append(path)
            logs.append(
                JudgedLog(f"{name}/{item.task.name}", rows, inputs, item.task.rubric_graded)
            )
    for path, log, rows in zip(paths, logs, judge_logs(jury, logs), strict=True):
        if rows != log.rows:
            write_jsonl_atomic(path, (row.model_dump(mode="json") for row in rows))


def trained_record(weights: Trained, staging: Path) -> dict[str, Any]:
    """How a trained model came to be, with paths relative to the run directory."""
    relative = {
        key: str(Path(value).relative_to(staging))
        for key, value in (("model", weights.model), ("adapter", weights.adapter))
        if value and Path(value).is_relative_to(staging)
    }
    return {**relative, "trained": weights.summary}


def link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def complete_sample_log(
    config: RunConfig, entry: ModelEntry, item: PreparedTask, model: Any, staging: Path
) -> None:
    """Score the samples the partial log lacks, appending each chunk durably; then write the
    finished log in sample order and drop the partial one. Under a launcher each process
    scores its shard into a partial log of its own and rank 0 gathers the rows."""
    run_dir = RunDir(staging)
    partial = run_dir.partial_log(entry.name, item.task.name)
    samples = item.samples
    rank, processes = process_rank(), process_count()
    if processes > 1:
        partial = run_dir.rank_log(entry.name, item.task.name, rank, processes)
        samples = shard(samples, model.chunk_size, rank, processes)
    done = {row["doc_id"]: row for row in read_jsonl_prefix(partial)}
    remaining = [sample for sample in samples if sample.doc_id not in done]
    for rows in evaluate_chunks(
        model,
        item.task,
        remaining,
        max_new_tokens=config.generation.max_new_tokens,
        label=f"{entry.name} {item.task.name}" + (f" [{rank}]" if processes > 1 else ""),
        already_done=len(done),
        choices_by=ChoiceScoring.of(entry, config.generation),
        sampling=entry.sampling,
        reasoned_max_new_tokens=config.generation.cot_max_new_tokens,
    ):
        dumped = [row.model_dump(mode="json") for row in rows]
        append_jsonl_durable(partial, dumped)
        done.update((row["doc_id"], row) for row in dumped)
    shares = gather_on_main(done)
    if shares is None:
        return  # rank 0 writes the log and removes this partial one
    gathered = {doc_id: row for share in shares for doc_id, row in share.items()}
    write_sample_log(run_dir, entry.name, item.task.name, item.samples, gathered)


def write_sample_log(
    run_dir: RunDir, model: str, task: str, samples: list[Sample], rows: dict[str, Any]
) -> None:
    """The finished log, one row per sample in sample order; the partial logs it was
    gathered from (this process's, each rank's) removed."""
    write_jsonl_atomic(run_dir.sample_log(model, task), (rows[sample.doc_id] for sample in samples))
    for written in run_dir.partial_logs(model, task):
        written.unlink(missing_ok=True)


def summary_line(result: TaskResult | SuiteResult) -> str:
    return (
        ", ".join(f"{name} {m.value:.4g}" for name, m in result.metrics.items())
        + f" (n={result.n})"
    )


def build_manifest(
    config: RunConfig,
    data_root: DataRoot,
    file_hashes: dict[str, str],
    prepared: list[PreparedTask],
    state: dict[str, Any],
    timings: dict[str, Any],
    started: float,
) -> Manifest:
    from medharness.tasks.medquad import SPLIT_SEED

    return Manifest(
        medharness_version=__version__,
        git_sha=git_sha(),
        command=list(sys.argv),
        started=datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
        finished=datetime.now(UTC).isoformat(timespec="seconds"),
        config=config.model_dump(mode="json"),
        tasks={item.task.name: item.identity() for item in prepared},
        models=state["models"],
        pair_keys=state["pairs"],  # a later run reuses a sample log whose key is unchanged
        data=DataRecord(
            root=str(data_root.path),
            origin=data_root.origin,
            sha256=file_hashes,
            skipped={item.task.name: item.skipped for item in prepared if item.skipped},
        ),
        seeds={"bootstrap": config.seed, "medquad_split": SPLIT_SEED},
        decoding=Decoding(
            strategy=decoding_strategy(config), max_new_tokens=config.generation.max_new_tokens
        ),
        versions={"python": platform.python_version(), **package_versions()},
        hardware=hardware(),
        timings_s={**timings, "total": round(time.time() - started, 3)},
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
    source = Path(__file__).resolve().parent.parent
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


def hardware() -> dict[str, Any]:
    """The machine; torch's view of it (threads, CUDA, GPU) when this process ran a model.
    A run whose every sample log was reused does not import torch (~3 s) just to say so."""
    info: dict[str, Any] = {
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
