"""A rubric: named criteria, each with an integer scale and an anchored description of its
levels, under a versioned id. Judgments are cached by the rubric's content, so editing a
rubric judges again; its id and version are what reports show."""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from pathlib import Path
from typing import Annotated

from pydantic import Field, model_validator

from medharness.core.errors import UserError
from medharness.core.io import resolve_inside
from medharness.core.validation import Strict, load_yaml_file, validate_file_data

SHIPPED = {"medical-qa": "medical_qa.yaml"}  # rubric name in a config -> file in this package

CriterionName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")]


class Criterion(Strict):
    name: CriterionName  # becomes the metric judge_<name>
    question: str = Field(min_length=1)
    low: int = Field(1, ge=0)  # the scale's worst score
    high: int = Field(5, le=100)  # the scale's best score
    anchors: dict[int, str]  # what a score means; at least the two ends

    @model_validator(mode="after")
    def anchored_scale(self) -> Criterion:
        if self.high <= self.low:
            raise ValueError(f"{self.name}: high ({self.high}) must be above low ({self.low})")
        outside = sorted(k for k in self.anchors if not self.low <= k <= self.high)
        if outside:
            raise ValueError(f"{self.name}: anchors {outside} are outside {self.low}-{self.high}")
        if self.low not in self.anchors or self.high not in self.anchors:
            raise ValueError(f"{self.name}: anchors must describe {self.low} and {self.high}")
        return self

    def normalised(self, score: float) -> float:
        """A score as a fraction of the scale: 0 the worst, 1 the best."""
        return (score - self.low) / (self.high - self.low)


class Rubric(Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
    version: int = Field(ge=1)
    description: str = ""
    criteria: list[Criterion] = Field(min_length=1)

    @model_validator(mode="after")
    def unique_criteria(self) -> Rubric:
        names = [c.name for c in self.criteria]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"criterion names must be unique; repeated: {', '.join(repeated)}")
        if "overall" in names:
            raise ValueError("'overall' is the mean of the criteria; name a criterion otherwise")
        return self

    @property
    def label(self) -> str:
        return f"{self.id}@v{self.version}"

    @cached_property
    def sha256(self) -> str:
        """Of the rubric's content: what cached judgments depend on."""
        return hashlib.sha256(json.dumps(self.model_dump(mode="json")).encode()).hexdigest()

    def criterion(self, name: str) -> Criterion:
        return next(c for c in self.criteria if c.name == name)


def load_rubric(spec: str, base_dir: Path) -> Rubric:
    """A shipped rubric by name, or a YAML file (relative to ``base_dir``)."""
    if spec in SHIPPED:
        path = Path(__file__).with_name(SHIPPED[spec])
    else:
        path = resolve_inside(base_dir, spec)
        if not path.is_file():
            raise UserError(
                f"rubric {spec!r}: no such file, and not a shipped rubric ({', '.join(SHIPPED)})"
            )
    return validate_file_data(Rubric, load_yaml_file(path, "rubric"), str(path), "rubric")
