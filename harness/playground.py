"""The playground of ``medharness view --playground``: a question put to every model of a run,
as the run put its questions (the entry's model, adapter, system prompt, backend and dtype; the
adapter a training of the run made; greedy decoding to the run's max_new_tokens), the answers
growing side by side. Models load on the first question, not before: the viewer alone never
loads one.
"""

from __future__ import annotations

import sys
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from medharness.config import ModelEntry
from medharness.core.records import ModelRecord
from medharness.evaluate import load_entry
from medharness.models.base import LanguageModel, answer_stream
from medharness.models.endpoint import refuse_recorded_keys
from medharness.models.loading import LoadSettings
from medharness.reports.runs import RunData


@dataclass
class Playground:
    """The model entries of one run, loaded when first asked."""

    run_dir: Path
    entries: list[ModelEntry]
    recorded: dict[str, ModelRecord]  # the manifest's record of each model
    max_new_tokens: int
    _loaded: dict[str, LanguageModel] = field(default_factory=dict)

    @classmethod
    def of_run(cls, run_dir: Path, endpoints: Collection[str] = ()) -> Playground:
        """The run's models; a server the run folder names gets the user's key only where
        the user names its URL again in ``endpoints``, as ``rescore`` asks of judges."""
        manifest = RunData.open(run_dir).manifest
        entries = [ModelEntry.model_validate(item) for item in manifest.config.get("models", [])]
        servers = [(f"model {e.name}", LoadSettings.of(e)) for e in entries]
        refuse_recorded_keys(run_dir, servers, endpoints, "name it yourself with --endpoint URL")
        return cls(run_dir, entries, manifest.models, manifest.decoding.max_new_tokens)

    @property
    def models(self) -> list[str]:
        return [entry.name for entry in self.entries]

    def model(self, entry: ModelEntry) -> LanguageModel:
        """The entry's model as the run evaluated it: with the weights its training made."""
        if entry.name not in self._loaded:
            print(f"[{entry.name}] loading for the playground", file=sys.stderr)
            record = self.recorded.get(entry.name)
            if record is not None and record.trained is not None:  # paths relative to the run
                model = str(self.run_dir / record.model) if record.model else entry.model
                adapter = str(self.run_dir / record.adapter) if record.adapter else None
                self._loaded[entry.name] = load_entry(entry, model, adapter)
            else:
                self._loaded[entry.name] = load_entry(entry)
        return self._loaded[entry.name]

    def ask(self, question: str) -> Iterator[list[str]]:
        """Every model's answer so far, one list per step, the models in the run's order."""
        answers = [""] * len(self.entries)
        for index, entry in enumerate(self.entries):
            for text in answer_stream(self.model(entry), question, self.max_new_tokens):
                answers[index] = text
                yield list(answers)
