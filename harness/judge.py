"""Put every free-text answer of a run to its judges and keep their verdicts in the logs.

Each judge reads each answer once: verdicts are cached by (judge identity, rubric content,
prompt version, question, reference, answer) in an append-only file fsynced per chunk, so a
re-run, a ``rescore`` or a run killed mid-judging judges only what no judge has yet. A judge
model is loaded only when some answer is new to it.
"""

from __future__ import annotations

import gc
import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from medharness.config import JudgeEntry, JurySettings, RunConfig
from medharness.core.cache import VerdictCache
from medharness.core.records import GenerationRow, InputRow, Judgment, SampleRow
from medharness.evaluate import answers_identity, close_engine, load_entry
from medharness.grading import grade_rows
from medharness.models.base import (
    LanguageModel,
    Progress,
    SharedPrefix,
    shared_prefix_loglikelihoods,
)
from medharness.tasks.judging.jury import jury_metrics
from medharness.tasks.judging.rubric import Rubric, load_rubric
from medharness.tasks.judging.verdicts import (
    PROMPT_VERSION,
    case_prompt,
    criterion_ask,
    judge_prompt,
    parse_verdict,
    probability_weighted,
)
from medharness.tasks.metrics import JUDGE_PREFIX


@dataclass(frozen=True)
class Jury:
    """The judges of a run, the rubric they grade by, and how their scores combine."""

    judges: list[JudgeEntry]
    rubric: Rubric
    settings: JurySettings

    @classmethod
    def of(cls, config: RunConfig, base_dir: Path) -> Jury | None:
        if not config.judges:
            return None
        return cls(config.judges, load_rubric(config.rubric, base_dir), config.jury)

    def cache_key(self, judge: JudgeEntry) -> str:
        """What a judge's verdicts depend on; its name is only a label."""
        identity = {
            **answers_identity(judge, labels=("name",)),
            "rubric_sha256": self.rubric.sha256,
            "prompt_version": PROMPT_VERSION,
            "max_new_tokens": self.settings.max_new_tokens,
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()

    def record(self) -> dict[str, dict[str, Any]]:
        """The manifest's account of each judge."""
        return {
            judge.name: {
                "model": judge.model,
                "adapter": judge.adapter,
                "rubric": self.rubric.label,
                "rubric_sha256": self.rubric.sha256,
                "prompt_version": PROMPT_VERSION,
                "combine": self.settings.combine,
                "cache_key": self.cache_key(judge),
            }
            for judge in self.judges
        }


@dataclass(frozen=True)
class JudgedLog:
    """One model's answers on one generation task, with what each was asked."""

    label: str  # model/task, for progress
    rows: list[SampleRow]
    inputs: dict[str, InputRow]
    rubric_graded: bool = False  # judged item by item against each sample's own rubric


def judge_logs(jury: Jury | None, logs: Sequence[JudgedLog]) -> list[list[SampleRow]]:
    """Every log's rows judged: by the jury's rubric, or, for rubric-graded tasks, item by
    item against each sample's own rubric with the jury's judges as graders."""
    by_rubric = [log for log in logs if not log.rubric_graded]
    by_items = [log for log in logs if log.rubric_graded]
    judged = iter(jury_logs(jury, by_rubric))
    graded = iter(
        grade_rows(
            jury.judges if jury else [],
            jury.settings.max_new_tokens if jury else 0,
            [(log.rows, log.inputs) for log in by_items],
        )
    )
    return [next(graded) if log.rubric_graded else next(judged) for log in logs]


def question_of(asked: InputRow) -> str:
    """The question itself, where a task's prompt wraps it in instructions."""
    return str(asked.metadata.get("question") or asked.prompt)


def answer_key(asked: InputRow, answer: str) -> str:
    identity = [question_of(asked), asked.target, answer]
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()


def jury_logs(jury: Jury | None, logs: Sequence[JudgedLog]) -> list[list[SampleRow]]:
    """Every log's rows with the jury's verdicts and metrics; without a jury, rows lose any
    verdicts an earlier run left (the results then describe no jury)."""
    if jury is None:
        return [[without_jury(row) for row in log.rows] for log in logs]
    keys = [
        [answer_key(log.inputs[row.doc_id], row.prediction) for row in log.rows] for log in logs
    ]
    wanted = {
        key: (log.inputs[row.doc_id], row.prediction)
        for log, log_keys in zip(logs, keys, strict=True)
        for row, key in zip(log.rows, log_keys, strict=True)
        if isinstance(row, GenerationRow)
    }
    verdicts = {judge.name: judge_answers(jury, judge, wanted) for judge in jury.judges}
    judged = []
    for log, log_keys in zip(logs, keys, strict=True):
        rows: list[SampleRow] = []
        for row, key in zip(log.rows, log_keys, strict=True):
            if not isinstance(row, GenerationRow):
                rows.append(row)
                continue
            judgments = [Judgment(judge=name, **verdicts[name][key]) for name in verdicts]
            metrics = unjudged_metrics(row)
            metrics.update(jury_metrics(judgments, jury.rubric, jury.settings.combine))
            rows.append(row.model_copy(update={"judgments": judgments, "metrics": metrics}))
        judged.append(rows)
    return judged


def unjudged_metrics(row: GenerationRow) -> dict[str, float]:
    return {k: v for k, v in row.metrics.items() if not k.startswith(JUDGE_PREFIX)}


def without_jury(row: SampleRow) -> SampleRow:
    if not isinstance(row, GenerationRow) or row.judgments is None:
        return row
    return row.model_copy(update={"judgments": None, "metrics": unjudged_metrics(row)})


def judge_answers(
    jury: Jury, judge: JudgeEntry, wanted: dict[str, tuple[InputRow, str]]
) -> dict[str, dict[str, Any]]:
    """Answer key -> this judge's verdict (scores, rationale, output, attempts), judging
    only the answers its cache lacks."""
    cache = VerdictCache(jury.cache_key(judge))
    # longest first, as evaluation orders its samples: a chunk pads to its longest prompt
    new = sorted(
        ((key, item) for key, item in wanted.items() if key not in cache.known),
        key=lambda pending: len(pending[1][1]) + len(pending[1][0].target),
        reverse=True,
    )
    if new:
        print(
            f"[judge {judge.name}] {len(new)} answers to judge "
            f"({len(wanted) - len(new)} already judged)",
            file=sys.stderr,
        )
        model = load_entry(judge)
        try:
            judge_new(model, jury, judge, new, cache)
        finally:
            close_engine(model)
            del model
            gc.collect()
    return {key: verdict_fields(cache.known[key]) for key in wanted}


def verdict_fields(cached: dict[str, Any]) -> dict[str, Any]:
    return {name: cached[name] for name in ("scores", "rationale", "output", "attempts")}


Pending = list[tuple[str, tuple[InputRow, str]]]  # answer key -> (what was asked, answer)


def judge_new(
    model: LanguageModel, jury: Jury, judge: JudgeEntry, new: Pending, cache: VerdictCache
) -> None:
    """Judge a chunk at a time, caching each chunk's verdicts before the next. A judge
    scored by probabilities runs one context per criterion, so its chunks hold fewer
    answers: the bar moves and a kill loses little."""
    weighted = judge.scoring == "probabilities"
    size = max(1, model.chunk_size // len(jury.rubric.criteria)) if weighted else model.chunk_size
    with tqdm(total=len(new), desc=f"judge {judge.name}", unit="answer", leave=False) as bar:
        for start in range(0, len(new), size):
            chunk = new[start : start + size]
            if weighted:
                cache.add(weighted_verdicts(model, jury, chunk))
            else:
                cache.add(written_verdicts(model, jury, chunk, bar.update))
            bar.n = start + len(chunk)
            bar.refresh()


def written_verdicts(
    model: LanguageModel, jury: Jury, chunk: Pending, progress: Progress | None = None
) -> list[dict[str, Any]]:
    """Verdicts the judge writes; an output whose scores are not all readable is judged once
    more with a stricter prompt, and the attempt that gave more scores is kept."""
    rubric, tokens = jury.rubric, jury.settings.max_new_tokens
    outputs = model.generate([prompt_for(rubric, *item) for _, item in chunk], tokens, progress)
    found = [
        parse_verdict(out, rubric, answer)
        for out, (_, (_, answer)) in zip(outputs, chunk, strict=True)
    ]
    attempts = [1] * len(chunk)
    retry = [i for i, verdict in enumerate(found) if len(verdict.scores) < len(rubric.criteria)]
    if retry:
        again = model.generate(
            [prompt_for(rubric, *chunk[i][1], strict=True) for i in retry], tokens
        )
        for i, output in zip(retry, again, strict=True):
            second = parse_verdict(output, rubric, chunk[i][1][1])
            attempts[i] = 2
            if len(second.scores) >= len(found[i].scores):
                found[i], outputs[i] = second, output
    return [
        {"key": key, "scores": verdict.scores, "rationale": verdict.rationale,
         "output": output, "attempts": tries}
        for (key, _), verdict, output, tries in zip(chunk, found, outputs, attempts, strict=True)
    ]  # fmt: skip


def weighted_verdicts(model: LanguageModel, jury: Jury, chunk: Pending) -> list[dict[str, Any]]:
    """Each criterion's score as the scale's values weighted by the judge's probability of
    each right after the criterion's prompt (``...score:``, no space, so a digit is one token
    for most tokenizers and the five are read off one forward pass)."""
    rubric = jury.rubric
    groups = [
        criteria_requests(rubric, question_of(asked), asked.target, answer)
        for _, (asked, answer) in chunk
    ]
    likelihoods = iter(shared_prefix_loglikelihoods(model, groups))
    verdicts = []
    for key, _ in chunk:
        scores: dict[str, float] = {}
        shown = []
        for criterion in rubric.criteria:
            values = list(range(criterion.low, criterion.high + 1))
            found = [next(likelihoods) for _ in values]
            score = probability_weighted(found, values)
            if score is not None:
                scores[criterion.name] = score
                shown.append(f"{criterion.name}: {score:.2f}")
        verdicts.append(
            {"key": key, "scores": scores, "rationale": "", "attempts": 1,
             "output": "probability-weighted scores; " + ", ".join(shown)}
        )  # fmt: skip
    return verdicts


def criteria_requests(rubric: Rubric, question: str, reference: str, answer: str) -> SharedPrefix:
    """One answer's requests, each criterion's context and each value of its scale: the
    contexts share the case and differ only in the criterion, so a backend that can runs
    the case once per answer (their contexts are ``criterion_prompt``'s)."""
    scales = tuple(
        (criterion_ask(c), tuple(f"{v}" for v in range(c.low, c.high + 1))) for c in rubric.criteria
    )
    return SharedPrefix(case_prompt(rubric, question, reference, answer), scales)


def prompt_for(rubric: Rubric, asked: InputRow, answer: str, *, strict: bool = False) -> str:
    return judge_prompt(rubric, question_of(asked), asked.target, answer, strict=strict)
