"""The main job: config -> every model on every task -> a complete run directory.

plan -> train -> execute -> judge -> aggregate -> write -> report. The run is assembled in a
hidden staging folder next to the target and renamed into place only when every file is
written, so ``runs/<name>/`` is either complete or absent; a killed run resumes from what
its staging folder holds.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from medharness.config import RunConfig
from medharness.core.distributed import from_main, is_main_process, released_collectives
from medharness.core.events import ModelLoaded
from medharness.core.folders import exclusive, refuse_foreign
from medharness.core.io import (
    read_jsonl_prefix,
    write_jsonl_atomic,
    write_record,
    write_text_atomic,
)
from medharness.core.records import ExecutorRecord, ResultsFile
from medharness.core.rundir import RunDir
from medharness.evaluate import input_row
from medharness.ray_executor import Cluster, connected
from medharness.reports.html import render_run_report
from medharness.run.cluster import RayExecutor
from medharness.run.executors import Executor, LocalExecutor
from medharness.run.manifest import build_manifest, model_record
from medharness.run.plan import Plan, make_plan, pending_work
from medharness.run.results import apply_jury, suites_of_run, task_results
from medharness.run.staging import made_by_main_process, put_in_place, resumable
from medharness.run.state import PreviousRun, RunState, Timings
from medharness.training import Trained, train_models


def run(
    config: RunConfig, *, base_dir: Path, output_dir: Path | None = None, limit: int | None = None
) -> Path:
    """Execute a run; return its directory. ``limit`` caps every task's sample count and
    every training's examples (the manifest's config records the caps)."""
    plan = make_plan(config, base_dir, output_dir, limit)
    config = plan.config  # with --limit applied to its trainings
    staging = RunDir.staging_for(plan.target)
    refuse_foreign(plan.target)  # before any work: never replace what medharness did not make
    made_by_main_process(staging.path)
    with (
        exclusive(staging.path) if is_main_process() else contextlib.nullcontext(),
        released_collectives(),
        resumable(staging),
    ):
        with on_cluster(config) as cluster:
            trained = train(plan, staging, cluster)
            state, timings = execute(plan, staging, trained, cluster)
            if not is_main_process():
                return plan.target  # rank 0 writes the run
            judge(plan, staging, timings)
            results = task_results(config, plan.prepared, staging)
            units = read_jsonl_prefix(staging.units)
            executor = cluster.record(units) if cluster else ExecutorRecord()
        suites = suites_of_run(config, results, staging)
        results_file = ResultsFile(baseline=config.models[0].name, results=results, suites=suites)
        write_record(staging.results, results_file)
        write_record(staging.manifest, build_manifest(plan, state, timings, executor))
        write_text_atomic(staging.report, render_run_report(staging.path))
        put_in_place(staging, plan.target)
    return plan.target


def on_cluster(config: RunConfig) -> contextlib.AbstractContextManager[Cluster | None]:
    """The Ray cluster a ``executor: ray`` run sends its work to; none for a local run."""
    return connected(config.ray) if config.executor == "ray" else contextlib.nullcontext()


def train(plan: Plan, staging: RunDir, cluster: Cluster | None) -> dict[str, Trained]:
    """Every training the config asks for, on the cluster where there is one; one finished
    in staging or in the run being replaced is reused. Every process of a launch trains,
    and evaluates its share of what training made. Then what every model is asked."""
    earlier = plan.target if plan.target.is_dir() else None
    if cluster is not None:
        cluster.train(plan.config, plan.data_root, staging.path, earlier)
    trained = from_main(train_models(plan.config, plan.data_root, staging.path, earlier))
    if is_main_process():
        for item in plan.prepared:
            rows = (input_row(sample).model_dump(mode="json") for sample in item.samples)
            write_jsonl_atomic(staging.input_log(item.task.name), rows)
    return trained


def execute(
    plan: Plan, staging: RunDir, trained: dict[str, Trained], cluster: Cluster | None
) -> tuple[RunState, Timings]:
    """Every model on every task, resuming from whatever an earlier attempt left in staging:
    finished sample logs are reused, partial ones continue after their last full chunk. A
    log of the finished run being replaced is reused when its pair key is unchanged."""
    state = RunState.of(staging)
    timings = Timings.of([entry.name for entry in plan.config.models])
    previous = PreviousRun.at(plan.target)
    pending = pending_work(plan.config, plan.prepared, staging, trained, previous, state)
    executor: Executor = RayExecutor(cluster) if cluster is not None else LocalExecutor()
    entries = {entry.name: entry for entry in plan.config.models}
    for event in executor.score(pending):
        if isinstance(event, ModelLoaded):
            entry = entries[event.model]
            state.models[entry.name] = model_record(event.description, entry, trained, staging)
            if is_main_process():
                state.save(staging)
            timings.loaded(event.model, event.load_s, event.ready_s)
        else:
            timings.scored(event.model, event.task, event.seconds)
    return state, timings


def judge(plan: Plan, staging: RunDir, timings: Timings) -> None:
    """The jury, if any, judges every free-text answer it has no verdict on."""
    clock = time.time()
    apply_jury(plan.jury, [entry.name for entry in plan.config.models], plan.prepared, staging)
    if plan.jury is not None:
        timings.judging_s = round(time.time() - clock, 3)
