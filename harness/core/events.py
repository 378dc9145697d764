"""What an executor tells the runner as it scores, whether it scores here or on a Ray
cluster: a model loaded (how its backend describes it) and a unit of a task scored. One
vocabulary below both executors, so the cluster's events reach the runner as they are."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelLoaded:
    """A model is ready to score: how its backend describes it, the seconds loading it
    took, and on a cluster those from asking for its first worker to that worker being
    ready (a process started, Python packages imported, the model loaded)."""

    model: str
    description: dict[str, Any]
    load_s: float
    ready_s: float | None = None


@dataclass(frozen=True)
class UnitDone:
    """Rows of a (model, task) scored and in its partial log (the task's last unit also
    wrote its finished log), in ``seconds``."""

    model: str
    task: str
    seconds: float


Event = ModelLoaded | UnitDone
