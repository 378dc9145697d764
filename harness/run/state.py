"""The state of a run while it is written: which sample log belongs to which pair key, how
each model was loaded, what the finished run it replaces offers, and where time went.

``run_state.json`` in the staging folder holds the first two, so a killed run resumes
knowing which of its logs are still valid; it is removed once the run is in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from medharness.core.io import write_record
from medharness.core.records import Manifest, ModelRecord
from medharness.core.rundir import RunDir

JsonRow = dict[str, JsonValue]  # one row of a sample log, as written


def pair_name(model: str, task: str) -> str:
    """A (model, task) pair as the manifest's ``pair_keys`` name it."""
    return f"{model}/{task}"


class RunState(BaseModel):
    """``run_state.json``: the pair key of every sample log in staging ("model/task" -> what
    the log depends on) and the record of each model loaded so far."""

    model_config = ConfigDict(extra="forbid")

    pairs: dict[str, str] = Field(default_factory=dict)
    models: dict[str, ModelRecord] = Field(default_factory=dict)

    @classmethod
    def of(cls, run_dir: RunDir) -> RunState:
        """What an earlier attempt at this staging folder left, or a fresh state."""
        path = run_dir.state
        return cls.model_validate_json(path.read_bytes()) if path.is_file() else cls()

    def save(self, run_dir: RunDir) -> None:
        write_record(run_dir.state, self)


@dataclass(frozen=True)
class PreviousRun:
    """The finished run a new one replaces: a sample log of it is reused where its pair key
    is unchanged, with its model's record."""

    dir: RunDir
    pairs: dict[str, str]
    models: dict[str, ModelRecord]

    @classmethod
    def at(cls, target: Path) -> PreviousRun | None:
        """The finished run now at ``target``; none where there is none this medharness reads."""
        try:
            manifest = Manifest.model_validate_json(RunDir(target).manifest.read_bytes())
        except (OSError, ValueError):
            return None  # nothing reused
        return cls(RunDir(target), manifest.pair_keys, manifest.models)


@dataclass
class Timings:
    """Seconds spent, rounded to milliseconds: per model its loading (and on Ray its first
    worker's start) and each task, and the jury's judging."""

    models: dict[str, dict[str, float]]
    judging_s: float | None = None

    @classmethod
    def of(cls, models: list[str]) -> Timings:
        return cls({name: {} for name in models})

    def loaded(self, model: str, load_s: float, ready_s: float | None) -> None:
        self.models[model]["load_s"] = round(load_s, 3)
        if ready_s is not None:
            self.models[model]["worker_ready_s"] = ready_s

    def scored(self, model: str, task: str, seconds: float) -> None:
        """A task's seconds, summed over the units it was scored in."""
        spent = self.models[model].get(task + "_s", 0.0)
        self.models[model][task + "_s"] = round(spent + seconds, 3)

    def record(self, total_s: float) -> dict[str, float | dict[str, float]]:
        """The manifest's ``timings_s``: each model's, judging's, and the run's total."""
        judging = {} if self.judging_s is None else {"judging_s": self.judging_s}
        return {**self.models, **judging, "total": round(total_s, 3)}
