"""The Ray executor: a run's work on a Ray cluster; its run directory on this process alone.

Evaluation is split into units: a model on a shard of a task (whole batches of its
evaluation order, so each unit's rows equal what one process scoring the whole task writes).
Each model entry gets ``resources.replicas`` actors that load the model once and score one
unit after another, asking the cluster for the entry's CPUs, GPUs, memory and custom
resources. Samples travel to the workers and rows come back: no file system is shared. A
worker that dies is restarted and its unit sent again (the actor's max_restarts and
max_task_retries); a unit that raises fails the run with its name and the error.

Trainings run as one Ray task each with the entry's resources: a training is one
process on one node (a GPU, or several through the trainers' own launcher), as it is
locally, and the finished folder (adapter, log) travels back. Ray Train would add a second
way to launch the same recipes for a case (one training over several nodes) that
1-8B LoRA fine-tunes do not need.
"""

from __future__ import annotations

import hashlib
import io
import logging
import shutil
import socket
import sys
import tarfile
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from tqdm import tqdm

from medharness.config import ModelEntry, RaySettings, RunConfig, SamplingSettings, WorkerResources
from medharness.core.errors import UserError
from medharness.core.events import Event, ModelLoaded, UnitDone
from medharness.core.folders import whole_or_absent
from medharness.core.records import ClusterNode, ExecutorRecord, UnitRecord
from medharness.core.rundir import RunDir
from medharness.data import DataRoot
from medharness.evaluate import (
    BAR,
    ChoiceScoring,
    close_engine,
    evaluate_chunks,
    evaluation_order,
    load_entry,
    units,
)
from medharness.tasks import Sample, Task
from medharness.training import data_folder, train_models, training_finished

RAY_EXTRA = "pip install 'medharness-eval[ray]'"
UNITS_BAR = BAR[:-1] + "{postfix}]"  # ..., 3.2doc/s, units 4/12]
QUIET_WORKERS = {"env_vars": {"TQDM_DISABLE": "1"}}  # the driver draws the progress bars


def require_ray() -> ModuleType:
    """Ray, or one line saying how to install it: the local executor needs no Ray."""
    try:
        import ray
    except ImportError:
        raise UserError(f"--executor ray needs Ray, which is not installed: {RAY_EXTRA}") from None
    return ray


@dataclass(frozen=True)
class TaskWork:
    """A task a model still has to be scored on: its samples and those already scored."""

    task: Task
    samples: list[Sample]
    done: frozenset[str]


@dataclass(frozen=True)
class Scoring:
    max_new_tokens: int
    choices_by: ChoiceScoring
    reasoned_max_new_tokens: int
    sampling: SamplingSettings | None = None


@dataclass(frozen=True)
class ModelWork:
    """A model entry's pending tasks, with the weights it is to load (training's, if any);
    ``shipped`` holds those only this machine has (trained in the run), as tar archives."""

    entry: ModelEntry
    spec: str
    adapter: str | None
    tasks: list[TaskWork]
    scoring: Scoring
    shipped: dict[str, bytes]


@dataclass(frozen=True)
class WorkerReady:
    description: dict[str, Any]
    chunk_size: int
    node_id: str
    load_s: float


@dataclass(frozen=True)
class UnitRows:
    rows: list[dict[str, Any]]
    node_id: str
    seconds: float


KeepUnit = Callable[[UnitRecord, list[dict[str, Any]]], None]
"""What the driver does with a unit's record and rows as they come back (it alone writes
the run directory)."""


def pack(folder: Path) -> bytes:
    """A folder as an uncompressed tar archive (weights do not compress)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.add(folder, arcname=".")
    return buffer.getvalue()


def unpack(blob: bytes, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r") as archive:
        archive.extractall(folder, filter="data")
    return folder


class ModelWorker:
    """A Ray actor: one model entry's model, loaded once, scoring one unit after another.

    A failure to load is kept and raised by ``ready``, so it reaches the driver as the
    error it is rather than as a worker that died (and is not retried: it would recur)."""

    def __init__(self, entry: ModelEntry, spec: str, adapter: str | None, shipped: Any) -> None:
        import ray

        started = time.time()
        self.node_id = ray.get_runtime_context().get_node_id()
        self.model: Any = None
        self.failure: Exception | None = None
        self.folder = tempfile.TemporaryDirectory(prefix="medharness-worker-")
        try:
            local = {
                path: str(unpack(ray.get(ref), Path(self.folder.name) / str(index)))
                for index, (path, ref) in enumerate(shipped.items())
            }
            weights = local.get(spec, spec)
            self.model = load_entry(
                entry, weights, local.get(adapter, adapter) if adapter else None
            )
        except Exception as exc:
            self.failure = exc
        self.load_s = round(time.time() - started, 3)

    def ready(self) -> WorkerReady:
        if self.failure is not None:
            raise self.failure
        return WorkerReady(self.model.describe(), self.model.chunk_size, self.node_id, self.load_s)

    def score(self, task: Task, samples: list[Sample], scoring: Scoring) -> UnitRows:
        started = time.time()
        rows = [
            row.model_dump(mode="json")
            for chunk in evaluate_chunks(
                self.model,
                task,
                samples,
                max_new_tokens=scoring.max_new_tokens,
                label=task.name,
                choices_by=scoring.choices_by,
                sampling=scoring.sampling,
                reasoned_max_new_tokens=scoring.reasoned_max_new_tokens,
            )
            for row in chunk
        ]
        return UnitRows(rows, self.node_id, round(time.time() - started, 3))

    def close(self) -> None:
        close_engine(self.model)
        self.folder.cleanup()


def train_remotely(config: RunConfig, name: str, subdir: str, data: bytes) -> bytes:
    """A Ray task: train config's entry ``name`` on the data shipped with it; return the
    finished training folder. It trains in a folder of this node's that outlives the task,
    so a retry on the same node resumes from the checkpoints saved there."""
    key = hashlib.sha256(f"{config.name}\0{name}".encode()).hexdigest()[:16]
    root = Path(tempfile.gettempdir()) / "medharness-ray" / key
    data_path = root / "data"
    shutil.rmtree(data_path, ignore_errors=True)
    unpack(data, data_path / subdir)
    entry = next(entry for entry in config.models if entry.name == name)
    alone = config.model_copy(update={"models": [entry]})
    train_models(alone, DataRoot(data_path, "shipped by the driver"), root / "run", None)
    return pack(RunDir(root / "run").training(name))


def placeable(resources: WorkerResources, nodes: list[dict[str, float]]) -> bool:
    """Whether one of ``nodes`` (each node's total resources, as Ray names them) can hold a
    worker asking for ``resources``: a request none can hold would wait forever."""
    wanted = {"CPU": resources.num_cpus, "GPU": resources.num_gpus, **resources.custom}
    if resources.memory_gib is not None:
        wanted["memory"] = resources.memory_gib * 2**30
    return any(all(node.get(k, 0.0) >= v for k, v in wanted.items() if v) for node in nodes)


def request(resources: WorkerResources) -> dict[str, Any]:
    """Ray options asking for what a model entry's workers need."""
    options: dict[str, Any] = {"num_cpus": resources.num_cpus, "num_gpus": resources.num_gpus}
    if resources.memory_gib is not None:
        options["memory"] = int(resources.memory_gib * 2**30)
    if resources.custom:
        options["resources"] = dict(resources.custom)
    return options


class Cluster:
    """A connection to a Ray cluster for the length of one run."""

    def __init__(self, ray: ModuleType, settings: RaySettings) -> None:
        self.ray = ray
        self.settings = settings

    def record(self, units: list[dict[str, Any]]) -> ExecutorRecord:
        """The cluster's nodes, with ``units`` (this attempt's and earlier ones')."""
        nodes = [
            ClusterNode(
                node_id=node["NodeID"],
                address=node["NodeManagerAddress"],
                resources={k: v for k, v in node["Resources"].items() if not k.startswith("node:")},
            )
            for node in self.ray.nodes()
            if node.get("Alive")
        ]
        return ExecutorRecord(
            kind="ray",
            address=self.settings.address,
            joined=self.ray.get_runtime_context().gcs_address,
            nodes=nodes,
            units=[UnitRecord.model_validate(unit) for unit in units],
        )

    def refuse_unplaceable(self, entry: ModelEntry) -> None:
        """One line, at once, for a model whose workers no node of the cluster can hold
        (Ray itself would keep them pending without a word)."""
        nodes = [node["Resources"] for node in self.ray.nodes() if node.get("Alive")]
        if not placeable(entry.resources, nodes):
            asked = entry.resources.model_dump(exclude={"replicas"}, exclude_none=True)
            raise UserError(
                f"model {entry.name}: no node of the Ray cluster has the resources it asks for "
                f"({asked}); nodes have: "
                + "; ".join(
                    ", ".join(f"{k} {v:g}" for k, v in node.items() if not k.startswith("node:"))
                    for node in nodes
                )
                + " (on an autoscaling cluster, start such a node first)"
            )

    def failure(self, what: str, exc: Exception) -> UserError:
        """One line naming the work that failed and why."""
        exceptions = self.ray.exceptions
        if isinstance(exc, exceptions.RayTaskError) and exc.cause is not None:
            cause = exc.cause
            named = isinstance(cause, UserError)
            reason = str(cause) if named else f"{type(cause).__name__}: {cause}"
        elif isinstance(exc, exceptions.RayActorError | exceptions.WorkerCrashedError):
            retries = self.settings.max_retries
            reason = f"its worker died and was restarted {retries} times (ray.max_retries): {exc}"
        else:
            reason = f"{type(exc).__name__}: {exc}"
        first = reason.splitlines()[0] if reason.strip() else "no reason given"
        return UserError(f"{what} failed: {first}")

    def train(
        self, config: RunConfig, data_root: DataRoot, staging: Path, previous: Path | None
    ) -> None:
        """Every training of ``config`` not finished in ``staging`` (nor in the earlier run
        ``previous``) trains as a Ray task; its folder comes back to ``staging/train/``."""
        folders = [staging] + ([previous] if previous is not None else [])
        remote = self.ray.remote(train_remotely)
        data: dict[str, Any] = {}
        pending: dict[Any, str] = {}
        for entry in config.models:
            if entry.train is None or training_finished(entry, data_root, folders):
                continue
            subdir = data_folder(entry.train)  # checked by training_finished
            if subdir not in data:
                data[subdir] = self.ray.put(pack(data_root.path / subdir))
            self.refuse_unplaceable(entry)
            print(f"[{entry.name}] training on the Ray cluster", file=sys.stderr)
            options = request(entry.resources)
            ref = remote.options(
                **options, max_retries=self.settings.max_retries, runtime_env=QUIET_WORKERS
            ).remote(config, entry.name, subdir, data[subdir])
            pending[ref] = entry.name
        while pending:
            [ref], _ = self.ray.wait(list(pending), num_returns=1)
            name = pending.pop(ref)
            try:
                blob = self.ray.get(ref)
            except self.ray.exceptions.RayError as exc:
                for other in pending:
                    self.ray.cancel(other, force=True)
                raise self.failure(f"training of {name}", exc) from None
            target = RunDir(staging).training(name)
            shutil.rmtree(target, ignore_errors=True)  # unfinished: what came back replaces it
            with whole_or_absent(target) as folder:
                unpack(blob, folder)

    def score(self, work: list[ModelWork], keep: KeepUnit) -> Iterator[Event]:
        """Score every unit of ``work``, yielding each model's description once its first
        worker is up and each unit once ``keep`` has taken its record and rows."""
        ray = self.ray
        queues: dict[str, deque[Unit]] = {}
        busy: dict[Any, Call] = {}  # what each call in flight is
        actors = []
        bars = TaskBars(work)
        try:
            for item in work:
                for actor in self.start_workers(item):
                    actors.append(actor)
                    busy[actor.ready.remote()] = Call(item, actor, sent=time.monotonic())
            while busy:
                [ref], _ = ray.wait(list(busy), num_returns=1)
                call = busy.pop(ref)
                item, actor, unit, name = call.item, call.actor, call.unit, call.item.entry.name
                try:
                    value = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    what = f"worker of {name} (loading {item.spec})"
                    raise self.failure(unit.name(name) if unit else what, exc) from None
                if call.closing:
                    ray.kill(actor, no_restart=True)  # its resources go to the models waiting
                    continue
                if unit is None and name not in queues:
                    queues[name] = plan(item, value.chunk_size, self.settings.shard_size)
                    bars.planned(queues[name])
                    ready_s = round(time.monotonic() - call.sent, 3)
                    yield ModelLoaded(name, value.description, value.load_s, ready_s)
                elif unit is not None:
                    record = unit.record(name, value)
                    keep(record, value.rows)
                    bars.done(record)
                    yield UnitDone(name, record.task, record.seconds)
                if queues[name]:
                    unit = queues[name].popleft()
                    scored = actor.score.remote(unit.work.task, unit.samples, item.scoring)
                    busy[scored] = Call(item, actor, unit)
                else:
                    busy[actor.close.remote()] = Call(item, actor, closing=True)
        except BaseException:
            for actor in actors:
                ray.kill(actor, no_restart=True)
            raise
        finally:
            bars.close()

    def start_workers(self, item: ModelWork) -> list[Any]:
        """A model entry's actors, asking for its resources; restarted when they die."""
        self.refuse_unplaceable(item.entry)
        shipped = {path: self.ray.put(blob) for path, blob in item.shipped.items()}
        retries = self.settings.max_retries
        options = request(item.entry.resources)
        worker = self.ray.remote(ModelWorker).options(
            **options, max_restarts=retries, max_task_retries=retries, runtime_env=QUIET_WORKERS
        )
        replicas = item.entry.resources.replicas
        return [
            worker.remote(item.entry, item.spec, item.adapter, shipped) for _ in range(replicas)
        ]


@dataclass(frozen=True)
class Call:
    """A call in flight to a model's worker: loading, scoring ``unit``, or closing."""

    item: ModelWork
    actor: Any
    unit: Unit | None = None
    closing: bool = False
    sent: float = 0.0  # time.monotonic() when it was sent


@dataclass(frozen=True)
class Unit:
    """Positions [start, stop) of a task's evaluation order, to be scored by one worker."""

    work: TaskWork
    positions: range
    samples: list[Sample]

    def name(self, model: str) -> str:
        where = f"samples {self.positions.start + 1}-{self.positions.stop}"
        return f"unit {model}/{self.work.task.name} {where} of {len(self.work.samples)}"

    def record(self, model: str, rows: UnitRows) -> UnitRecord:
        return UnitRecord(
            model=model,
            task=self.work.task.name,
            start=self.positions.start,
            stop=self.positions.stop,
            node_id=rows.node_id,
            seconds=rows.seconds,
        )


def plan(item: ModelWork, chunk_size: int, shard_size: int) -> deque[Unit]:
    """A model's units: for each pending task, its shards of whole chunks left to score."""
    queue: deque[Unit] = deque()
    for task_work in item.tasks:
        ordered = evaluation_order(task_work.samples)
        for positions in units(task_work.samples, task_work.done, chunk_size, shard_size):
            queue.append(Unit(task_work, positions, ordered[positions.start : positions.stop]))
    return queue


class TaskBars:
    """One progress bar per task across the cluster: samples scored (and their rate), units
    done of units planned (a model's units are planned once its first worker is up)."""

    def __init__(self, work: list[ModelWork]) -> None:
        totals: dict[str, int] = {}
        for item in work:
            for task_work in item.tasks:
                left = len(task_work.samples) - len(task_work.done)
                totals[task_work.task.name] = totals.get(task_work.task.name, 0) + left
        self.bars = {
            name: tqdm(total=total, desc=name, unit="doc", position=index, bar_format=UNITS_BAR)
            for index, (name, total) in enumerate(totals.items())
        }
        self.units = {name: [0, 0] for name in totals}

    def planned(self, queue: deque[Unit]) -> None:
        for unit in queue:
            self.units[unit.work.task.name][1] += 1
        for name in self.bars:
            self.show(name)

    def done(self, record: UnitRecord) -> None:
        self.units[record.task][0] += 1
        self.bars[record.task].update(record.stop - record.start)
        self.show(record.task)

    def show(self, name: str) -> None:
        finished, planned = self.units[name]
        self.bars[name].set_postfix_str(f"units {finished}/{planned}")

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def check_answers(address: str) -> None:
    """A HOST:PORT where nothing listens is refused at once: Ray would retry for minutes."""
    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return  # auto, ray://...: Ray resolves and times out on its own
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        where = f"cannot start or join Ray at {address}"
        raise UserError(f"{where}: nothing answers there ({reason})") from None


@contextmanager
def connected(settings: RaySettings) -> Iterator[Cluster]:
    """Ray joined for the block's length; without ``address``, a Ray of the run's own started
    on this machine (``local``: never a cluster that ``RAY_ADDRESS`` or an earlier ``ray
    start`` left here, which Ray's default would join)."""
    ray = require_ray()
    options: dict[str, Any] = {"logging_level": logging.WARNING}
    if settings.runtime_env is not None:
        options["runtime_env"] = settings.runtime_env
    if settings.address is None:
        options["include_dashboard"] = False
    else:
        check_answers(settings.address)
    try:
        ray.init(address=settings.address or "local", **options)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        where = settings.address or "this machine"
        raise UserError(
            f"cannot start or join Ray at {where}: {str(exc).splitlines()[0]}"
        ) from None
    try:
        yield Cluster(ray, settings)
    finally:
        ray.shutdown()
