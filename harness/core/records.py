"""The typed, versioned records a run writes and every reader validates.

Writers build these and serialise them; readers parse files back into them, so a missing
or mistyped field is one error naming the file and the field, never a KeyError deep inside
a report. ``docs/schemas/`` holds the JSON Schema of each file, generated from these
classes (``python -m medharness.core.records docs/schemas``); a test keeps them in step.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    Tag,
    TypeAdapter,
    model_serializer,
    model_validator,
)

from medharness.core.validation import Strict

SCHEMA_VERSION: Final = 1  # of results.json and manifest.json; bump when a field changes meaning


class MetricValue(Strict):
    """A metric's value over a task's samples with its 95% interval, in the metric's units."""

    value: float
    ci95: tuple[float, float]
    # samples with a value, where some have none (a judge whose output could not be parsed)
    n: int | None = Field(None, ge=0, exclude_if=lambda value: value is None)


class TaskResult(Strict):
    """One model on one task: sample count, each metric, and how each was computed."""

    n: int = Field(ge=0)
    metrics: dict[str, MetricValue]
    settings: dict[str, Any] = Field(default_factory=dict)
    # a task scored by its own rules (MedCalc-Bench): each metric per group of a breakdown
    # key, {key: {group: {metric: value}}}; absent for other tasks
    breakdowns: dict[str, dict[str, dict[str, MetricValue]]] = Field(
        default_factory=dict, exclude_if=lambda value: not value
    )


class SuiteComparison(Strict):
    """A model's suite value minus the baseline's on the same questions, with its 95%
    interval and two-sided p-value from a paired bootstrap that resamples within tasks."""

    baseline: str
    difference: float
    ci95: tuple[float, float]
    p_value: float
    test: str


class SuiteResult(Strict):
    """One model on a suite: each metric averaged over its tasks weighted by their sizes
    (lm-eval's group aggregation), with a 95% interval from a bootstrap within tasks."""

    tasks: list[str]
    n: int = Field(ge=0)
    metrics: dict[str, MetricValue]
    # metric -> this model against the baseline; empty for the baseline itself
    vs_baseline: dict[str, SuiteComparison] = Field(default_factory=dict)
    settings: dict[str, Any] = Field(default_factory=dict)


class ResultsFile(Strict):
    """``results.json``: model -> task -> result, and model -> suite -> result for the
    suites the run reports; the first model is the baseline."""

    schema_version: Literal[1] = SCHEMA_VERSION
    baseline: str
    results: dict[str, dict[str, TaskResult]]
    suites: dict[str, dict[str, SuiteResult]] = Field(
        default_factory=dict, exclude_if=lambda value: not value
    )

    def result(self, model: str, task: str) -> TaskResult | None:
        return self.results.get(model, {}).get(task)


class Judgment(Strict):
    """One judge's verdict on one answer: its scores per rubric criterion, parsed from its
    own output only (or weighted by its probabilities of each score); a criterion it gave no
    readable score for is absent, never zero."""

    judge: str
    scores: dict[str, float]
    rationale: str = ""
    output: str  # what the judge wrote (its last attempt), shown beside the answer
    attempts: int = Field(1, ge=1)  # 2 when the first output could not be parsed


ExtractionRule = Literal[
    "final_answer", "answer_is", "opening", "single_option", "none", "truncated"
]


class SampledAnswer(Strict):
    """One of a question's answers under sampled decoding (a model's ``sampling:``): its
    seed, its text and its own scores; the option read from it for multiple choice."""

    seed: int
    answer: str
    metrics: dict[str, float]
    chosen: int | None = Field(None, exclude_if=lambda value: value is None)  # -1: none read
    extracted_by: ExtractionRule | None = Field(None, exclude_if=lambda value: value is None)
    reasoning: str | None = Field(None, exclude_if=lambda value: value is None)
    reasoning_tokens: int | None = Field(None, ge=0, exclude_if=lambda value: value is None)
    answer_tokens: int | None = Field(None, ge=0, exclude_if=lambda value: value is None)
    hit_token_limit: bool | None = Field(None, exclude_if=lambda value: value is None)


class ItemVerdict(Strict):
    """One grader's verdict on one rubric item of one answer (HealthBench grading)."""

    grader: str
    met: bool | None  # None: no readable verdict in two attempts; the item is left out
    explanation: str = ""
    output: str  # what the grader wrote (its last attempt)
    attempts: int = Field(1, ge=1)


class GradedItem(Strict):
    """A rubric item of the sample's own rubric, and its graders' verdicts on the answer."""

    criterion: str
    points: float
    tags: list[str] = Field(default_factory=list)
    verdicts: list[ItemVerdict]
    met: bool | None  # the graders' majority; None where unread or tied (left out)


class GenerationRow(Strict):
    """One free-text answer in ``samples/MODEL/TASK.jsonl``."""

    doc_id: str
    target: str
    prediction: str
    metrics: dict[str, float]
    # sacrebleu's per-sample sufficient statistics: corpus BLEU of any subset is a sum away
    bleu_stats: list[int] | None = None
    # the jury's verdicts, one per judge; absent where no jury judged the answer
    judgments: list[Judgment] | None = Field(None, exclude_if=lambda value: value is None)
    # sampled decoding: every answer to the question (prediction is the first, metrics are
    # the means over them, bleu_stats their sums); absent for a greedy answer
    repeats: list[SampledAnswer] | None = Field(None, exclude_if=lambda value: value is None)
    # a task scored by its own rules (MedCalc-Bench): the answer read from the prediction,
    # as it was scored; "" where none could be read, absent for other tasks
    extracted: str | None = Field(None, exclude_if=lambda value: value is None)
    # rubric-graded tasks (HealthBench): every item of the sample's rubric, with verdicts
    graded_items: list[GradedItem] | None = Field(None, exclude_if=lambda value: value is None)


class ChoiceRow(Strict):
    """One multiple-choice answer: every option's log-likelihood and the one chosen, or
    (generate-then-parse) the model's answer in words and the option read from it."""

    doc_id: str
    target: str
    prediction: str
    choices: list[str]
    loglikelihoods: list[float | None]
    chosen: int  # -1 when a log-likelihood was not a number
    chosen_probability: float | None = None  # softmax over the options at the chosen one
    gold: int
    invalid_loglikelihood: bool = False
    metrics: dict[str, float]
    # generate-then-parse: the answer the option was parsed from (prediction holds that
    # option, or "" when it names none); absent where options were scored by likelihood
    answer: str | None = Field(None, exclude_if=lambda value: value is None)
    # the reasoning trace cut out of the answer (or returned beside it by a server), and
    # its length in tokens where the backend counts them
    reasoning: str | None = Field(None, exclude_if=lambda value: value is None)
    reasoning_tokens: int | None = Field(None, ge=0, exclude_if=lambda value: value is None)
    answer_tokens: int | None = Field(None, ge=0, exclude_if=lambda value: value is None)
    # decoding stopped at the token budget, not at the answer's end
    hit_token_limit: bool | None = Field(None, exclude_if=lambda value: value is None)
    # which rule read the option (tasks/answers.py EXTRACTION_RULES): final_answer,
    # answer_is, opening, single_option; none (invalid) or truncated where none was read
    extracted_by: ExtractionRule | None = Field(None, exclude_if=lambda value: value is None)
    # sampled decoding: every answer to the question; chosen is then the majority vote (the
    # other fields those of the first answer that voted for it), and metrics are the means
    # over the answers, with pass_at_k and majority_acc where there are several
    repeats: list[SampledAnswer] | None = Field(None, exclude_if=lambda value: value is None)


def _row_kind(row: Any) -> str:
    choice = isinstance(row, ChoiceRow) or (isinstance(row, dict) and "choices" in row)
    return "choice" if choice else "generation"


# A row with options is a multiple-choice row; validation errors then name its own fields.
SampleRow = Annotated[
    Annotated[GenerationRow, Tag("generation")] | Annotated[ChoiceRow, Tag("choice")],
    Discriminator(_row_kind),
]


class InputRow(Strict):
    """What every model was asked about one sample (``inputs/TASK.jsonl``), once per run."""

    doc_id: str
    prompt: str
    target: str
    choices: list[str] | None = None
    gold: int | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class TrainLogRow(Strict):
    """One line of a training's ``log.jsonl``: a logged optimiser step (loss, learning rate,
    gradient norm, speed), an evaluation (``validation``: loss and the task metric on the
    validation slice), or the step a killed training resumed from."""

    step: int = Field(ge=0)
    epoch: float | None = None
    loss: float | None = None
    learning_rate: float | None = None
    grad_norm: float | None = None
    tokens_per_s: float | None = None
    validation: dict[str, float] | None = None
    resumed: bool = False


class TaskIdentity(Strict):
    """What makes results on a task comparable with another run's."""

    version: str
    kind: str
    summary: str
    prompt: str
    n: int
    sample_ids_sha256: str
    data_sha256: dict[str, str]


class DataRecord(Strict):
    root: str
    origin: str
    sha256: dict[str, str]
    skipped: dict[str, dict[str, int]] = Field(default_factory=dict)  # task -> reason -> rows


class Decoding(Strict):
    strategy: str
    max_new_tokens: int


class Rescore(Strict):
    """A ``medharness rescore`` of a finished run: what it added, when."""

    at: str
    metrics: list[str]
    judges: list[str]
    rubric: str | None = None


class ClusterNode(Strict):
    """A node of the Ray cluster a run used, as Ray reported it when the run began."""

    node_id: str
    address: str
    resources: dict[str, float]


class UnitRecord(Strict):
    """One unit a Ray run scored: a model on positions [start, stop) of a task's evaluation
    order (longest first), where, and in how long."""

    model: str
    task: str
    start: int
    stop: int
    node_id: str
    seconds: float


class ExecutorRecord(Strict):
    """Where the run's models ran: this machine (local), or a Ray cluster's nodes."""

    kind: Literal["local", "ray"] = "local"
    address: str | None = None  # the cluster as the driver named it (None: a Ray of its own)
    joined: str | None = None  # the GCS address of the cluster the run used
    nodes: list[ClusterNode] = Field(default_factory=list)
    units: list[UnitRecord] = Field(default_factory=list)  # in the order they finished


class ModelRecord(BaseModel):
    """The manifest's record of one model: its backend's own description (``kind``, then
    the backend's fields), and what the run adds: the processes of a launch that scored it,
    and for a trained model the weights' paths relative to the run and the training's
    summary. Written back in the order its keys came in, so a record read from an earlier
    run and written again is the same text."""

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)

    kind: str | None = None  # the backend that loaded it; absent for a run imported from lm-eval
    processes: int | None = Field(None, ge=2)  # a launcher's processes, each scoring a share
    model: str | None = None  # trained weights (relative to the run), or the model's name
    adapter: str | None = None  # the adapter loaded (trained: relative to the run)
    trained: dict[str, Any] | None = None  # the training's summary (train/MODEL/done.json)
    _order: tuple[str, ...] = PrivateAttr(default=())

    @model_validator(mode="wrap")
    @classmethod
    def _remember_order(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        record = handler(data)
        if isinstance(data, dict):
            record._order = tuple(data)
        return record

    @model_serializer(mode="wrap")
    def _in_given_order(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        dumped: dict[str, Any] = handler(self)
        return {key: dumped[key] for key in self._order if key in dumped}


class Manifest(Strict):
    """``manifest.json``: everything that makes a run's results reproducible."""

    schema_version: Literal[1] = SCHEMA_VERSION
    medharness_version: str
    git_sha: str | None
    command: list[str]
    started: str
    finished: str
    config: dict[str, Any]  # the RunConfig as resolved (medharness.config)
    tasks: dict[str, TaskIdentity]
    models: dict[str, ModelRecord]
    pair_keys: dict[str, str]  # "model/task" -> what its sample log depends on
    data: DataRecord
    seeds: dict[str, int]
    decoding: Decoding
    versions: dict[str, str]
    hardware: dict[str, Any]
    timings_s: dict[str, Any]
    judges: dict[str, dict[str, Any]] = Field(default_factory=dict)  # name -> model record
    rescored: list[Rescore] = Field(default_factory=list)
    executor: ExecutorRecord = ExecutorRecord()

    def bootstrap_settings(self) -> tuple[int, int]:
        """(resamples, seed) the run's intervals were computed with."""
        return (
            int(self.config.get("bootstrap_resamples", 1000)),
            int(self.config.get("seed", 1234)),
        )


GateVerdict = Literal["PASS", "FAIL", "INCONCLUSIVE", "MISSING"]
GateTier = Literal["critical", "supporting", "advisory"]
GateEffect = Literal["none", "warns", "blocks"]


class GateRule(Strict):
    """One rule of a release gate, judged: its verdict, what that does to the decision
    (by the rule's tier), and the evidence. Drops and margins are in points (0-100)."""

    name: str  # the rule in words
    task: str
    metric: str | None = None
    kind: str  # floor, max_drop, max_relative_drop, max_significant_drop, ...
    tier: GateTier
    verdict: GateVerdict
    effect: GateEffect
    evidence: str  # the measurement and the reasoning, one sentence
    estimate: float | None = None  # the drop (baseline - candidate) or the candidate's value
    interval: tuple[float, float] | None = None  # of the estimate
    interval_method: str | None = None
    threshold: float | None = None  # the margin in points, or the floor in the metric's units
    n: int | None = None  # questions behind the evidence
    questions_needed: int | None = None  # to decide an INCONCLUSIVE rule at the observed spread


class GateFlips(Strict):
    """Questions of one task whose correctness differs between baseline and candidate."""

    task: str
    right_to_wrong: list[str]  # doc ids the baseline got right and the candidate wrong
    wrong_to_right: list[str]


class GateDecision(Strict):
    """The output of ``medharness gate --json``: every rule's verdict and the decision."""

    schema_version: Literal[1] = 1
    candidate: str
    baseline: str | None
    decision: Literal["PASS", "BLOCKED"]
    inconclusive_blocks: bool
    rules: list[GateRule]
    flips: list[GateFlips] = Field(default_factory=list)


SAMPLE_ROWS: TypeAdapter[list[SampleRow]] = TypeAdapter(list[SampleRow])
INPUT_ROWS: TypeAdapter[list[InputRow]] = TypeAdapter(list[InputRow])
TRAIN_LOG_ROWS: TypeAdapter[list[TrainLogRow]] = TypeAdapter(list[TrainLogRow])

ON_DISK: dict[str, type[BaseModel] | TypeAdapter[Any]] = {
    "results.schema.json": ResultsFile,
    "manifest.schema.json": Manifest,
    "sample-row.schema.json": TypeAdapter(SampleRow),
    "input-row.schema.json": InputRow,
    "train-log-row.schema.json": TrainLogRow,
    "gate.schema.json": GateDecision,
}


def json_schemas() -> dict[str, str]:
    """File name -> JSON Schema text of every on-disk record."""
    schemas = {}
    for name, record in ON_DISK.items():
        schema = (
            record.json_schema() if isinstance(record, TypeAdapter) else record.model_json_schema()
        )
        schemas[name] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return schemas


def write_json_schemas(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in json_schemas().items():
        (folder / name).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    write_json_schemas(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/schemas"))
