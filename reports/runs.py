"""Read saved run directories: the only input reports have."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.io import read_jsonl


def read_log(path: Path) -> list[dict[str, Any]]:
    """A JSONL file parsed as one JSON array (one C call instead of one per line); the line
    reader, which names the bad line, only runs when that fails."""
    text = path.read_text(encoding="utf-8").strip()
    try:
        rows = json.loads("[" + text.replace("\n", ",") + "]") if text else []
    except json.JSONDecodeError:
        return list(read_jsonl(path))
    if not all(isinstance(row, dict) for row in rows):
        return list(read_jsonl(path))
    return rows


@dataclass
class RunData:
    """One run directory, its files parsed on first use."""

    path: Path
    _samples: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    _inputs: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    @classmethod
    def open(cls, path: Path) -> RunData:
        for name in ("results.json", "manifest.json"):
            if not (path / name).is_file():
                raise UserError(f"{path} is not a finished run directory (no {name})")
        return cls(path)

    @property
    def name(self) -> str:
        return self.path.name.removeprefix(".").removesuffix(".partial")

    @cached_property
    def results(self) -> dict[str, Any]:
        return self._json("results.json")

    @cached_property
    def manifest(self) -> dict[str, Any]:
        return self._json("manifest.json")

    def _json(self, name: str) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.path / name).read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise UserError(f"{self.path / name}:{exc.lineno}: not valid JSON") from None
        return data

    @property
    def models(self) -> list[str]:
        return list(self.results["results"])

    def samples(self, model: str, task: str) -> list[dict[str, Any]]:
        key = (model, task)
        if key not in self._samples:
            path = self.path / "samples" / model / f"{task}.jsonl"
            if not path.is_file():
                raise UserError(f"{path} is missing from the run directory")
            self._samples[key] = read_log(path)
        return self._samples[key]

    def inputs(self, task: str) -> dict[str, dict[str, Any]]:
        """doc_id -> what the models were asked (prompt, target, metadata) for a task."""
        if task not in self._inputs:
            path = self.path / "inputs" / f"{task}.jsonl"
            if not path.is_file():
                raise UserError(f"{path} is missing from the run directory")
            self._inputs[task] = {row["doc_id"]: row for row in read_log(path)}
        return self._inputs[task]

    def train_log(self, model: str) -> list[dict[str, Any]]:
        path = self.path / "train" / model / "log.jsonl"
        return list(read_jsonl(path)) if path.is_file() else []

    def sweeps(self) -> dict[str, dict[str, Any]]:
        """Model -> its hyper-parameter sweep (``train/<model>/sweep.json``), where it had one."""
        return {
            path.parent.name: self._json(str(path.relative_to(self.path)))
            for path in sorted((self.path / "train").glob("*/sweep.json"))
        }
