"""The run config: one YAML file, validated strictly, every error naming its key."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, PlainValidator, create_model, field_validator, model_validator
from pydantic_core import PydanticCustomError

from medharness.core.errors import UserError
from medharness.core.validation import Strict, load_yaml_file, validate_file_data
from medharness.models.specs import BACKENDS, answer_neutral_settings, engine_names, prefixed
from medharness.tasks import TASKS, Task
from medharness.tasks.answers import DEFAULT_REASONING_TAGS
from medharness.tasks.base import TaskKind
from medharness.tasks.custom import CustomTask, custom_task
from medharness.tasks.hub_sources import with_source
from medharness.tasks.suites import SUITES
from medharness.trainers.spec import TrainSpec

# Names become folder names inside the run directory: no separators, no way out of it.
SLUG = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
Slug = Annotated[str, Field(pattern=SLUG)]


def registered_engine(value: Any) -> str:
    """An entry's ``backend``: auto or a registered engine, refused as a Literal of them is."""
    names = engine_names()
    if not isinstance(value, str) or value not in names:
        quoted = [repr(name) for name in names]
        expected = ", ".join(quoted[:-1]) + " or " + quoted[-1]
        raise PydanticCustomError(
            "literal_error", "Input should be {expected}", {"expected": expected}
        )
    return value


EngineName = Annotated[str, PlainValidator(registered_engine)]


class WorkerResources(Strict):
    """What each of a model's workers asks a Ray cluster for (executor: ray only)."""

    num_cpus: float = Field(1.0, ge=0)  # also its torch threads (Ray sets OMP_NUM_THREADS)
    num_gpus: float = Field(0.0, ge=0)  # 1 for a model on its own GPU; 0.5 shares one
    memory_gib: float | None = Field(None, gt=0)  # host memory the scheduler reserves
    custom: dict[str, float] = Field(default_factory=dict)  # e.g. {a100: 1}: nodes with it
    replicas: int = Field(1, ge=1, le=1024)  # workers scoring this model's units at once


class ReasoningTags(Strict):
    """Where a reasoning model's trace starts and ends; without tags, the common ones
    (<think>, <thinking>, <reasoning>) are recognised."""

    think_start: str | None = Field(None, min_length=1)
    think_end: str | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def paired(self) -> ReasoningTags:
        if (self.think_start is None) != (self.think_end is None):
            raise ValueError("give both think_start and think_end, or neither")
        return self

    def pairs(self) -> tuple[tuple[str, str], ...]:
        if self.think_start is None or self.think_end is None:
            return DEFAULT_REASONING_TAGS
        return ((self.think_start, self.think_end),)


class SamplingSettings(Strict):
    """Sampled decoding of a model's generated answers (multiple_choice: generate or cot,
    and free-text tasks): each question answered ``repeats`` times, every answer seeded
    from ``seed``, the question and the repeat, so a rerun or a resumed run draws the same
    answers. Each question's score is the mean over its repeats."""

    repeats: int = Field(1, ge=1, le=1000)  # answers per question; K times the cost
    temperature: float = Field(0.0, ge=0, le=10)  # 0: greedy (one answer, nothing drawn)
    top_p: float = Field(1.0, gt=0, le=1)  # nucleus sampling; 1 keeps every token
    seed: int = Field(0, ge=0, lt=2**32)

    @model_validator(mode="after")
    def drawn(self) -> SamplingSettings:
        if self.repeats > 1 and self.temperature == 0:
            raise ValueError(
                f"repeats: {self.repeats} needs a temperature above 0 (greedy decoding gives "
                "the same answer every time)"
            )
        return self

    @property
    def sampled(self) -> bool:
        return self.temperature > 0

    def describe(self) -> str:
        return (
            f"repeats {self.repeats}, temperature {self.temperature:g}, top_p {self.top_p:g}, "
            f"seed {self.seed}"
        )


class EntryCommon(Strict):
    """A model entry's keys every backend reads; ``ModelEntry`` adds each backend's own."""

    name: Slug  # column header in reports and folder under samples/
    # smollm2-135m-instruct | fake:PATH | openai:NAME (served; see base_url) | folder | hub id
    model: str = Field(min_length=1)
    adapter: str | None = None  # PEFT adapter directory or hub id, applied on `model`
    # auto: vLLM on a CUDA device when it is installed (LoRA adapters too), else transformers
    backend: EngineName = "auto"  # or a registered engine (models/backends/)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: bf16 on CUDA
    device: str = "auto"  # auto: cuda when present, else cpu
    # auto: 8 on a CPU; on CUDA what fits in free memory, halved if a batch still overflows
    batch_size: Annotated[int, Field(ge=1, le=1024)] | Literal["auto"] = "auto"
    system_prompt: str | None = None  # None keeps the chat template's own default
    allow_pickle: bool = False  # load .bin/.pt weights (pickles can run code): trusted only
    train: TrainSpec | None = None  # fine-tune `model` (+ `adapter`) first; see trainers/spec.py
    # multiple-choice tasks: loglikelihood (lm-eval's rule: the likeliest option),
    # generate (the model answers in words; the option is parsed from its answer, and
    # answers naming none are counted as invalid): for chat models and for servers that
    # return no prompt log-probs, or cot (chain of thought: the model reasons, then ends on
    # "Final Answer: X", as lm-eval's generative medical tasks ask): for instruct and
    # reasoning models, what their model cards quote
    multiple_choice: Literal["loglikelihood", "generate", "cot"] = "loglikelihood"
    # a reasoning model's trace tags (cut out before the answer is read, kept in the log)
    reasoning: ReasoningTags | None = Field(None, exclude_if=lambda value: value is None)
    # sampled decoding of generated answers: {repeats: K, temperature, top_p, seed};
    # absent, answers are greedy (one per question)
    sampling: SamplingSettings | None = Field(None, exclude_if=lambda value: value is None)

    @model_validator(mode="after")
    def reasons_in_words(self) -> EntryCommon:
        if self.reasoning is not None and self.multiple_choice == "loglikelihood":
            raise ValueError(
                "reasoning: needs multiple_choice: cot or generate (log-likelihood scoring "
                "reads no generated text)"
            )
        return self

    @model_validator(mode="after")
    def repeats_in_words(self) -> EntryCommon:
        if self.repeated and self.multiple_choice == "loglikelihood":
            raise ValueError(
                "sampling.repeats needs multiple_choice: generate or cot (log-likelihood "
                "scoring samples nothing; a free-text-only run may set multiple_choice too)"
            )
        return self

    @property
    def repeated(self) -> bool:
        """Whether each question is answered more than once."""
        return self.sampling is not None and self.sampling.repeats > 1

    @model_validator(mode="after")
    def fits_its_backend(self) -> EntryCommon:
        """The checks of the backend a prefixed spec names, then no backend's settings on
        an entry of another."""
        found = prefixed(self.model)
        if found is not None and found[0].check is not None:
            found[0].check(self)
        for backend in BACKENDS.values():
            given = any(getattr(self, name) is not None for name in backend.setting_names)
            if given and not backend.serves(self):
                raise ValueError(backend.misplaced)
        return self

    def answers_alike(self, other: EntryCommon, task_kind: TaskKind) -> bool:
        """Whether this entry and ``other``, in one run, answer a task of ``task_kind``
        alike by construction: every setting their answers depend on is equal. A system
        prompt is one only where the model writes: log-likelihood scoring never shows it."""
        ignored = {"name", "resources", *answer_neutral_settings()}
        if task_kind == "multiple_choice" and self.multiple_choice == "loglikelihood":
            ignored.add("system_prompt")
        return self.model_dump(exclude=ignored) == other.model_dump(exclude=ignored)


def with_backend_settings(common: type[EntryCommon]) -> type[EntryCommon]:
    """``common`` with every registered backend's entry settings as keys of its own (in
    registration order, each absent by default), so a backend declares them in one place."""
    fields: dict[str, Any] = {
        name: (field.annotation, field)
        for backend in BACKENDS.values()
        if backend.settings is not None
        for name, field in backend.settings.model_fields.items()
    }
    return create_model("EntryWithBackends", __base__=common, __module__=__name__, **fields)


if TYPE_CHECKING:  # mypy sees the common keys; the backends' are read through LoadSettings
    EntryWithBackends = EntryCommon
else:
    EntryWithBackends = with_backend_settings(EntryCommon)


class ModelEntry(EntryWithBackends):
    """A model of the run: the common keys, each backend's own (declared in its module of
    models/backends/: base_url, api_key_env and requests for openai:NAME; vllm for
    backend: vllm), and what a Ray worker of it asks for."""

    resources: WorkerResources = WorkerResources()  # executor: ray: each worker's request


class JudgeEntry(ModelEntry):
    # verdict: the judge writes its scores (any backend); probabilities: each criterion's
    # score is the scale's values weighted by the judge's probability of each (G-Eval), from
    # log-likelihoods; steadier for small judges, which seldom write a readable verdict
    scoring: Literal["verdict", "probabilities"] = "verdict"


class TaskEntry(Strict):
    name: str  # a built-in task, or the name of your own (with custom:)
    limit: int | None = Field(None, ge=1)  # first N samples of the split (stable order)
    custom: CustomTask | None = None  # your own test set: see tasks/custom.py
    # a built-in task's rows from a hub copy instead of the data root: hub (the copy model
    # cards used), hub:ORG/NAME@REVISION, or a local folder in the hub's layout
    source: str | None = None

    @model_validator(mode="after")
    def known_task(self) -> TaskEntry:
        if self.custom is None and self.name not in TASKS:
            raise ValueError(
                f"unknown task or suite {self.name!r}; known tasks: {', '.join(TASKS)}; "
                f"suites: {', '.join(SUITES)} (or define your own under suites:, or give your "
                "own file under custom:)"
            )
        if self.custom is not None and self.name in TASKS:
            raise ValueError(f"{self.name!r} is a built-in task; name your own task otherwise")
        if self.custom is not None and self.source is not None:
            raise ValueError("source: a custom task names its file in custom.path")
        if self.custom is not None and not re.fullmatch(SLUG, self.name):
            raise ValueError(f"task name {self.name!r}: letters, digits, '.', '_', '-' only")
        return self

    def task(self, base_dir: Path) -> Task:
        """The task this entry names: built-in, or the user's file (relative to base_dir)."""
        if self.custom is not None:
            return custom_task(self.name, self.custom, base_dir)
        if self.source is not None:
            return with_source(TASKS[self.name], self.source, base_dir)
        return TASKS[self.name]


def recorded_task(config: dict[str, Any], name: str) -> Task | None:
    """The task a run's recorded config means by ``name``: built-in or the user's own (its
    definition only: readers never load its file)."""
    for item in config.get("tasks", []):
        if isinstance(item, dict) and item.get("name") == name and item.get("custom"):
            return TaskEntry.model_validate(item).task(Path.cwd())
    return TASKS.get(name)


class GenerationSettings(Strict):
    max_new_tokens: int = Field(128, ge=1, le=8192)
    # the answer of a model with multiple_choice: generate (reasoning models need thousands)
    choice_max_new_tokens: int = Field(32, ge=1, le=32768)
    # the answer of a model with multiple_choice: cot: its reasoning and final line (lm-eval's
    # generative medical tasks allow 512; reasoning models need several thousand)
    cot_max_new_tokens: int = Field(2048, ge=1, le=131072)


class RaySettings(Strict):
    """Where and how ``executor: ray`` runs (README: on a cluster, on Slurm)."""

    # none: a Ray started for this run on this machine; auto: the cluster this machine
    # belongs to (RAY_ADDRESS, or one `ray start` began here); HOST:PORT or ray://HOST:PORT
    address: str | None = None
    shard_size: int = Field(64, ge=1, le=100_000)  # samples per unit, rounded up to whole batches
    max_retries: int = Field(3, ge=0, le=100)  # restarts of a worker that died; its unit reruns
    # Ray runtime env of the workers (pip, env_vars, working_dir...): medharness installed
    runtime_env: dict[str, Any] | None = None


class JurySettings(Strict):
    combine: Literal["mean", "majority"] = "mean"  # a criterion's score from its judges'
    max_new_tokens: int = Field(160, ge=16, le=4096)  # of each judge's verdict


def unique(kind: str, names: list[str]) -> None:
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{kind} names must be unique; repeated: {', '.join(repeated)}")


SUITE_SETTINGS = {"limit", "source"}  # what a suite's entry in tasks passes to its tasks


def expand_suites(tasks: list[Any], suites: dict[str, list[str]]) -> tuple[list[Any], list[str]]:
    """``tasks`` with every suite name replaced by the suite's tasks not listed already
    (each with the suite entry's limit and source), and the suites so named."""
    entries = [{"name": item} if isinstance(item, str) else item for item in tasks]
    names = [entry.get("name") if isinstance(entry, dict) else None for entry in entries]
    listed = {name for name in names if name not in suites}
    expanded, named = [], []
    for entry, name in zip(entries, names, strict=True):
        if not isinstance(name, str) or name not in suites or name in TASKS:
            expanded.append(entry)
            continue
        settings = {key: value for key, value in entry.items() if key != "name"}
        if set(settings) - SUITE_SETTINGS:
            raise ValueError(f"suite {name}: only limit and source apply to a suite's tasks")
        named.append(name)
        for member in suites[name]:
            if member not in listed:
                expanded.append({"name": member, **settings})
                listed.add(member)
    return expanded, named


class RunConfig(Strict):
    name: Slug  # the run directory is <output_dir>/<name>
    models: list[ModelEntry] = Field(min_length=1)  # the first one is the baseline
    tasks: list[TaskEntry] = Field(min_length=1)
    # your own suites: name -> its tasks (built-in or your own); a suite's average over its
    # tasks is reported beside them. As the run records it: every suite it reports, the
    # built-in ones named in tasks (multimedqa) included
    suites: dict[Slug, list[str]] = Field(default_factory=dict)
    limit: int | None = Field(None, ge=1)  # default per-task limit
    seed: int = 1234  # bootstrap seed
    bootstrap_resamples: int = Field(1000, ge=100, le=100_000)
    data_dir: str | None = None  # else $MEDHARNESS_DATA_DIR, else the user cache
    output_dir: str = "runs"
    generation: GenerationSettings = GenerationSettings()
    # the report's p-values are adjusted over all its comparisons together: holm (family-wise
    # error), bh (Benjamini-Hochberg false discovery rate) or none; verdicts use them
    multiple_comparisons: Literal["holm", "bh", "none"] = "holm"
    # LLM judges that grade every free-text answer against the rubric (a jury when several);
    # model entries as above, on any backend; their scores become judge_<criterion> metrics
    judges: list[JudgeEntry] = Field(default_factory=list)
    rubric: str = "medical-qa"  # a shipped rubric, or a YAML file of your own
    jury: JurySettings = JurySettings()
    # local: this process (or each process of a torchrun/accelerate launch); ray: units of
    # (model, task, shard) on a Ray cluster, this process writing the run (pip extra [ray])
    executor: Literal["local", "ray"] = "local"
    ray: RaySettings = RaySettings()
    # model entries that differ only in their adapter (fine-tunes of one base) are served by
    # one loaded base, each adapter swapped in turn, with the answers of one load each
    # (local executor; README: Config); false loads each entry anew
    share_base_models: bool = True

    @model_validator(mode="before")
    @classmethod
    def suites_as_tasks(cls, data: Any) -> Any:
        """Suite names in ``tasks`` become their tasks; ``suites`` then holds every suite
        the run reports, so the resolved config validates to itself."""
        if not isinstance(data, dict) or not isinstance(data.get("tasks"), list):
            return data
        defined = data.get("suites") or {}
        if not isinstance(defined, dict) or not all(
            isinstance(members, list) for members in defined.values()
        ):
            return data  # the suites field's own validation says what is wrong
        suites = {**{name: list(members) for name, members in SUITES.items()}, **defined}
        tasks, named = expand_suites(data["tasks"], suites)
        reported = {name: suites[name] for name in named}
        return {**data, "tasks": tasks, "suites": {**reported, **defined}}

    @field_validator("tasks", mode="before")
    @classmethod
    def names_as_entries(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": item} if isinstance(item, str) else item for item in value]
        return value

    @model_validator(mode="after")
    def unique_names(self) -> RunConfig:
        unique("model", [m.name for m in self.models])
        unique("task", [t.name for t in self.tasks])
        unique("judge", [j.name for j in self.judges])
        if any(judge.train is not None for judge in self.judges):
            raise ValueError("judges are used as they are: a judge cannot have a train: block")
        if any(judge.sampling is not None for judge in self.judges):
            raise ValueError("judges decode greedily: a judge cannot have a sampling: block")
        repeated = [model.name for model in self.models if model.repeated]
        if self.judges and repeated:
            raise ValueError(
                f"model {repeated[0]}: the jury judges one answer per question; drop "
                "sampling.repeats or the judges"
            )
        return self

    @model_validator(mode="after")
    def graders_for_rubric_tasks(self) -> RunConfig:
        graded = [e.name for e in self.tasks if e.name in TASKS and TASKS[e.name].rubric_graded]
        if graded and not self.judges:
            raise ValueError(
                f"{', '.join(graded)}: answers are graded item by item by the run's judges; "
                "name at least one grader under judges:"
            )
        return self

    @model_validator(mode="after")
    def suites_of_run_tasks(self) -> RunConfig:
        tasks = [entry.name for entry in self.tasks]
        for name, members in self.suites.items():
            if name in TASKS or name in tasks:
                raise ValueError(f"suites: {name!r} is a task's name; name the suite otherwise")
            if name in SUITES and tuple(members) != SUITES[name]:
                raise ValueError(
                    f"suites: {name!r} is a built-in suite ({', '.join(SUITES[name])}); "
                    "name yours otherwise"
                )
            if not members:
                raise ValueError(f"suites: {name}: a suite needs at least one task")
            unique(f"suite {name}'s task", members)
            for member in members:
                if member not in tasks:
                    raise ValueError(
                        f"suites: {name}: {member!r} is not a task of this run"
                        + ("" if member in TASKS else " nor a built-in task")
                        + f"; list it under tasks, or name {name} there"
                    )
        return self

    def naming_suites(self, task: str, exc: UserError) -> UserError:
        """An error about a task's data, naming the suites that need the task."""
        suites = [name for name, members in self.suites.items() if task in members]
        return UserError(f"suite {', '.join(suites)} needs {task}: {exc}") if suites else exc

    def task_limit(self, entry: TaskEntry) -> int | None:
        return entry.limit if entry.limit is not None else self.limit


def parse_config(data: Any, source: str) -> RunConfig:
    return validate_file_data(RunConfig, data, source, "settings")


def load_config(path: Path) -> RunConfig:
    return parse_config(load_yaml_file(path, "config"), str(path))
