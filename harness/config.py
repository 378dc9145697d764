"""The run config: one YAML file, validated strictly, every error naming its key."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from harness.errors import UserError
from tasks import TASKS
from trainers.spec import TrainSpec

M = TypeVar("M", bound=BaseModel)

# Names become folder names inside the run directory: no separators, no way out of it.
Slug = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelEntry(Strict):
    name: Slug  # column header in reports and folder under samples/
    model: str  # smollm2-135m-instruct | fake:PATH | local directory | hub id
    adapter: str | None = None  # PEFT adapter directory or hub id, applied on `model`
    # auto: vLLM on a CUDA device when it is installed (LoRA adapters too), else transformers
    backend: Literal["auto", "hf", "vllm"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: bf16 on CUDA
    device: str = "auto"  # auto: cuda when present, else cpu
    # auto: 8 on a CPU; on CUDA what fits in free memory, halved if a batch still overflows
    batch_size: Annotated[int, Field(ge=1, le=1024)] | Literal["auto"] = "auto"
    system_prompt: str | None = None  # None keeps the chat template's own default
    allow_pickle: bool = False  # load .bin/.pt weights (pickles can run code): trusted only
    train: TrainSpec | None = None  # fine-tune `model` (+ `adapter`) first; see trainers/spec.py

    @model_validator(mode="after")
    def trainable(self) -> ModelEntry:
        if self.train is not None and self.model.startswith("fake:"):
            raise ValueError("a fake model cannot be trained")
        return self


class TaskEntry(Strict):
    name: str
    limit: int | None = Field(None, ge=1)  # first N samples of the split (stable order)

    @field_validator("name")
    @classmethod
    def known_task(cls, name: str) -> str:
        if name not in TASKS:
            raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
        return name


class GenerationSettings(Strict):
    max_new_tokens: int = Field(128, ge=1, le=8192)


class RunConfig(Strict):
    name: Slug  # the run directory is <output_dir>/<name>
    models: list[ModelEntry] = Field(min_length=1)  # the first one is the baseline
    tasks: list[TaskEntry] = Field(min_length=1)
    limit: int | None = Field(None, ge=1)  # default per-task limit
    seed: int = 1234  # bootstrap seed
    bootstrap_resamples: int = Field(1000, ge=100, le=100_000)
    data_dir: str | None = None  # else $MEDHARNESS_DATA_DIR, else the user cache
    output_dir: str = "runs"
    generation: GenerationSettings = GenerationSettings()

    @field_validator("tasks", mode="before")
    @classmethod
    def names_as_entries(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": item} if isinstance(item, str) else item for item in value]
        return value

    @model_validator(mode="after")
    def unique_names(self) -> RunConfig:
        for kind, names in (
            ("model", [m.name for m in self.models]),
            ("task", [t.name for t in self.tasks]),
        ):
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                raise ValueError(f"{kind} names must be unique; repeated: {', '.join(repeated)}")
        return self

    def task_limit(self, entry: TaskEntry) -> int | None:
        return entry.limit if entry.limit is not None else self.limit


def format_validation_error(source: str, error: ValidationError) -> str:
    """All problems on one line: ``file: key.path: message; key.path: message``."""
    parts = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = "unknown key"
        parts.append(f"{where}: {message}")
    return f"{source}: " + "; ".join(parts)


def validate_file_data(schema: type[M], data: Any, source: str, what: str) -> M:
    """``data`` (parsed YAML) as ``schema``; every problem on one UserError line."""
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected a mapping of {what} at the top level")
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise UserError(format_validation_error(source, exc)) from None


def parse_config(data: Any, source: str) -> RunConfig:
    return validate_file_data(RunConfig, data, source, "settings")


def load_yaml_file(path: Path, what: str) -> Any:
    """A YAML file's data; a missing, unreadable or malformed file is one UserError line."""
    if not path.is_file():
        raise UserError(f"{what} file not found: {path}")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or "could not parse"
        raise UserError(f"{where}: malformed YAML ({problem})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None


def load_config(path: Path) -> RunConfig:
    return parse_config(load_yaml_file(path, "config"), str(path))
