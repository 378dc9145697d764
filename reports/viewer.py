"""What ``medharness view`` shows: every sample of a task across the models of one or more runs
(or lm-eval folders), filtered and sorted as the viewer asks, and the HTML of the answers side
by side. Pure functions over run directories; the web app (``medharness.reports.view_app``)
only lays out what these return, so every rule here is tested without a browser.

Model text is shown as text: it goes through Jinja's autoescape, never into markup.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from medharness.core.errors import UserError
from medharness.core.records import ChoiceRow, GradedItem, Judgment, SampleRow
from medharness.reports.html import Entry, entries_of, environment, primary_metric, probability
from medharness.reports.runs import RunData
from medharness.tasks.metrics import JUDGE_PREFIX

ALL = "all samples"
DISAGREE = "models disagree"
ITEM_DIFFERS = "models differ on a rubric item"
PROBABILITY = "probability of the chosen option"
SHOWN = 100  # samples rendered per page of the viewer; the count says how many matched
MAX_GROUPS = 30  # a metadata key with more distinct values is an id, not a group


@dataclass(frozen=True)
class Answer:
    """One model's answer to one sample, with what it scored."""

    model: str
    text: str
    chosen: int | None  # multiple choice: the option picked (-1: none)
    correct: bool | None  # multiple choice, and answers a task's own rules scored
    metrics: dict[str, float]
    probability: float | None
    judgments: list[Judgment] = field(default_factory=list)
    # an option (or a task's answer, MedCalc-Bench) read from a generated answer: which ("" for
    # none), by which rule, and the reasoning cut out first
    extracted: str | None = None
    rule: str | None = None
    reasoning: str | None = None
    reasoning_tokens: int | None = None
    graded_items: list[GradedItem] = field(default_factory=list)  # rubric-graded tasks

    def measure(self, name: str) -> float | None:
        return self.probability if name == PROBABILITY else self.metrics.get(name)


@dataclass(frozen=True)
class SampleView:
    """A sample of a task: what was asked, the reference, and each model's answer."""

    task: str
    doc_id: str
    prompt: str
    reference: str
    metadata: dict[str, Any]
    answers: list[Answer]

    @property
    def disagree(self) -> bool:
        """Multiple choice: the models picked different options; free text: they wrote
        different answers."""
        if all(answer.chosen is not None for answer in self.answers):
            return len({answer.chosen for answer in self.answers}) > 1
        return len({answer.text.strip() for answer in self.answers}) > 1

    @property
    def item_differs(self) -> bool:
        """Rubric-graded tasks: some item one model's answer met and another's did not."""
        verdicts = zip(*(a.graded_items for a in self.answers if a.graded_items), strict=False)
        return any(len({item.met for item in items} - {None}) > 1 for items in verdicts)

    def difference(self, measure: str) -> float:
        """The spread of ``measure`` over the models that have it (0 with fewer than two)."""
        values = [v for answer in self.answers if (v := answer.measure(measure)) is not None]
        return max(values) - min(values) if len(values) > 1 else 0.0


def answer_of(label: str, row: SampleRow) -> Answer:
    if isinstance(row, ChoiceRow):
        text = row.prediction if row.answer is None else f"{row.prediction} ({row.answer})"
        return Answer(
            label,
            text,
            row.chosen,
            row.chosen == row.gold,
            row.metrics,
            probability(row),
            extracted=None if row.extracted_by is None else row.prediction,
            rule=row.extracted_by,
            reasoning=row.reasoning,
            reasoning_tokens=row.reasoning_tokens,
        )
    return Answer(
        label,
        row.prediction,
        None,
        bool(row.metrics["acc"]) if "acc" in row.metrics else None,  # a task's own scoring
        row.metrics,
        None,
        row.judgments or [],
        extracted=row.extracted,
        graded_items=row.graded_items or [],
    )


@dataclass
class Viewer:
    """The samples of every task of some runs, read once."""

    runs: list[RunData]
    _views: dict[str, list[SampleView]] = field(default_factory=dict)

    @classmethod
    def open(cls, paths: Sequence[Path]) -> Viewer:
        return cls([RunData.open(path) for path in paths])

    @cached_property
    def entries(self) -> list[Entry]:
        return entries_of(self.runs)

    @cached_property
    def tasks(self) -> list[str]:
        return list(dict.fromkeys(t for e in self.entries for t in e.run.results.results[e.model]))

    def models(self, task: str) -> list[str]:
        return [entry.label for entry in self.entries if entry.has(task)]

    def _present(self, task: str) -> list[Entry]:
        present = [entry for entry in self.entries if entry.has(task)]
        if not present:
            raise UserError(f"no run has task {task!r}; tasks: {', '.join(self.tasks)}")
        return present

    def samples(self, task: str) -> list[SampleView]:
        """Every sample of ``task`` in document order, each with the answers of the models
        that have the task."""
        if task not in self._views:
            present = self._present(task)
            inputs = present[0].run.inputs(task)
            logs = [{row.doc_id: row for row in entry.samples(task)} for entry in present]
            self._views[task] = [
                SampleView(
                    task,
                    doc_id,
                    asked.prompt,
                    asked.target,
                    asked.metadata,
                    [
                        answer_of(entry.label, log[doc_id])
                        for entry, log in zip(present, logs, strict=True)
                        if doc_id in log
                    ],
                )
                for doc_id, asked in inputs.items()
            ]
        return self._views[task]

    def outcomes(self, task: str) -> list[str]:
        """The filters on outcomes: all, disagreements, and per model right or wrong where
        answers can be."""
        choices = [ALL, DISAGREE]
        if any(a.graded_items for s in self.samples(task)[:1] for a in s.answers):
            choices.append(ITEM_DIFFERS)
        if self._present(task)[0].result(task).metrics.get("acc") is not None:
            for model in self.models(task):
                choices += [f"{model} right", f"{model} wrong"]
        return choices

    def groups(self, task: str) -> list[str]:
        """``key=value`` filters: the task's breakdown keys (qtype, source, ...), else any
        metadata key with a few distinct values."""
        definition = self._present(task)[0].run.task(task)
        keys = list(definition.breakdown_keys) if definition else []
        values: dict[str, set[str]] = {}
        for sample in self.samples(task):
            for key, value in sample.metadata.items():
                if isinstance(value, str | int) and not isinstance(value, bool):
                    values.setdefault(key, set()).add(str(value))
        keys = keys or [k for k, found in values.items() if 1 < len(found) <= MAX_GROUPS]
        return [ALL, *(f"{k}={v}" for k in keys for v in sorted(values.get(k, ())))]

    def measures(self, task: str) -> list[str]:
        """What a sort by per-sample difference can use: the primary metric, each judge
        criterion, and for multiple choice the probability of the chosen option."""
        metrics = list(self._present(task)[0].result(task).metrics)
        names = [primary_metric(metrics)]
        names += [m for m in metrics if m.startswith(JUDGE_PREFIX)]
        if any(a.probability is not None for s in self.samples(task)[:1] for a in s.answers):
            names.append(PROBABILITY)
        return names

    def select(
        self,
        task: str,
        outcome: str = ALL,
        group: str = ALL,
        sort_by: str | None = None,
        doc_id: str | None = None,
    ) -> list[SampleView]:
        """The samples of ``task`` that pass both filters (or the one question ``doc_id``),
        in document order or by the largest difference of ``sort_by`` between the models."""
        chosen = self.samples(task)
        if doc_id is not None:
            chosen = [s for s in chosen if s.doc_id == doc_id]
        if outcome == DISAGREE:
            chosen = [s for s in chosen if s.disagree]
        elif outcome == ITEM_DIFFERS:
            chosen = [s for s in chosen if s.item_differs]
        elif outcome != ALL:
            model, _, verdict = outcome.rpartition(" ")
            chosen = [s for s in chosen if right(s, model) is (verdict == "right")]
        if group != ALL:
            key, _, value = group.partition("=")
            chosen = [s for s in chosen if str(s.metadata.get(key)) == value]
        if sort_by:
            chosen = sorted(chosen, key=lambda s: -s.difference(sort_by))
        return chosen


def right(sample: SampleView, model: str) -> bool | None:
    return next((a.correct for a in sample.answers if a.model == model), None)


def render(samples: Sequence[SampleView], of: int | None = None, limit: int = SHOWN) -> str:
    """The answers of the selected samples side by side, model text escaped; the count says
    how many of the task's ``of`` samples the filters kept."""
    template = environment().get_template("viewer_samples.html.j2")
    total = len(samples) if of is None else of
    return template.render(shown=samples[:limit], matched=len(samples), total=total)
