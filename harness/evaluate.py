"""Put a task's samples to a model and score each sample into a typed sample row."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from tqdm import tqdm

from medharness.config import GenerationSettings, ModelEntry, SamplingSettings
from medharness.core.records import ChoiceRow, GenerationRow, InputRow, SampledAnswer, SampleRow
from medharness.models.base import Completion, LanguageModel, Sampling, count_tokens
from medharness.models.identity import served_identity, weights_identity
from medharness.models.loading import LoadSettings, load_with
from medharness.models.specs import BACKENDS, answer_neutral_settings, prefixed
from medharness.tasks import Sample, Task
from medharness.tasks.answers import DEFAULT_REASONING_TAGS, extract_choice
from medharness.tasks.metrics import (
    INVALID_ANSWER,
    MAJORITY_ACC,
    PASS_AT_K,
    TRUNCATED,
    answer_scores,
)
from medharness.tasks.metrics.repeats import majority_vote, pass_at_k
from medharness.tasks.metrics.text import accuracy
from medharness.tasks.multiple_choice import choice_question, cot_question
from medharness.tasks.textscore import bleu_statistics


@dataclass(frozen=True)
class ChoiceScoring:
    """How a model answers multiple-choice tasks: the likeliest option (lm-eval's rule), or
    an answer in words of at most ``max_new_tokens`` that the option is read from (asked for
    the option alone, or for reasoning and a final line), its reasoning trace in ``tags``."""

    method: Literal["loglikelihood", "generate", "cot"]
    max_new_tokens: int
    tags: tuple[tuple[str, str], ...] = DEFAULT_REASONING_TAGS

    @classmethod
    def of(cls, entry: ModelEntry, generation: GenerationSettings) -> ChoiceScoring:
        budget = {
            "cot": generation.cot_max_new_tokens,
            "generate": generation.choice_max_new_tokens,
        }
        tags = entry.reasoning.pairs() if entry.reasoning else DEFAULT_REASONING_TAGS
        return cls(entry.multiple_choice, budget.get(entry.multiple_choice, 0), tags)

    @property
    def parsed(self) -> bool:
        return self.method != "loglikelihood"

    def message(self, sample: Sample) -> str:
        ask = cot_question if self.method == "cot" else choice_question
        return ask(sample.prompt, sample.choices)


# whole samples, though generation reports fractions of a batch as it decodes
BAR = "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} [{elapsed}<{remaining}, {rate_fmt}]"


def evaluate_chunks(
    model: LanguageModel,
    task: Task,
    samples: Sequence[Sample],
    *,
    max_new_tokens: int,
    label: str,
    already_done: int = 0,
    choices_by: ChoiceScoring | None = None,
    sampling: SamplingSettings | None = None,
    reasoned_max_new_tokens: int | None = None,
) -> Iterator[list[SampleRow]]:
    """Score samples a chunk at a time, yielding typed rows (prediction, per-sample metrics,
    what produced them) so the caller can persist each chunk before the next. Options of a
    multiple-choice task are scored as ``choices_by`` says (by log-likelihood without it);
    generated answers are sampled as ``sampling`` says (greedy without it); the answers of
    a task that reasons first get ``reasoned_max_new_tokens`` where given.

    Samples go longest first, as lm-eval orders its requests: batches of similar length
    waste little on padding (in prompt order a chunk of MedQA questions pads ~10% more),
    and a too-long batch fails at once. The order is a stable sort, so what is left after an
    interruption is the tail of the same order and is batched as it would have been."""
    ordered = evaluation_order(samples)
    total = already_done + len(samples)
    with tqdm(
        total=total, initial=already_done, desc=label, unit="doc", leave=False, bar_format=BAR
    ) as bar:
        done = already_done
        for start in range(0, len(ordered), model.chunk_size):
            chunk = ordered[start : start + model.chunk_size]
            parsed = task.kind == "multiple_choice" and choices_by is not None and choices_by.parsed
            budget = (task.reasoned and reasoned_max_new_tokens) or max_new_tokens
            if sampling is not None and sampling.sampled and (parsed or task.kind == "generate"):
                rows = _sampled_rows(model, task, chunk, budget, choices_by, sampling, bar)
            elif parsed and choices_by is not None:
                messages = [choices_by.message(sample) for sample in chunk]
                answers = model.complete(messages, choices_by.max_new_tokens, bar.update)
                rows = _parsed_choices(model, chunk, answers, choices_by)
            elif task.kind == "multiple_choice":
                rows = _score_choices(model, task, chunk)
            else:
                outputs = model.generate(
                    [s.conversation or s.prompt for s in chunk], budget, bar.update
                )
                rows = _generation_rows(task, chunk, outputs)
            yield rows
            done += len(chunk)
            bar.n = done  # exact at every chunk's end, whatever the model reported on the way
            bar.refresh()


def evaluation_order(samples: Sequence[Sample]) -> list[Sample]:
    """Longest first (prompt and longest option, in characters); a stable sort."""
    return sorted(samples, key=_length, reverse=True)


def _length(sample: Sample) -> int:
    return len(sample.prompt) + max((len(choice) for choice in sample.choices), default=0)


def shard(samples: Sequence[Sample], chunk_size: int, rank: int, processes: int) -> list[Sample]:
    """Process ``rank``'s share: every ``processes``-th chunk of the evaluation order. Each
    process then scores exactly the chunks (so the batches) one process would have, and
    the gathered rows equal a single process's."""
    ordered = evaluation_order(samples)
    chunks = [ordered[start : start + chunk_size] for start in range(0, len(ordered), chunk_size)]
    return [sample for chunk in chunks[rank::processes] for sample in chunk]


def units(
    samples: Sequence[Sample], done: Collection[str], chunk_size: int, shard_size: int
) -> list[range]:
    """What is left of a task to score, as ranges of its evaluation order of at most
    ``shard_size`` samples (rounded up to whole chunks), none spanning a finished sample.
    Finished work is always whole chunks, so each range is batched exactly as one process
    scoring the whole task batches it, and its rows equal that process's."""
    size = -(-shard_size // chunk_size) * chunk_size
    ranges: list[range] = []
    for index, sample in enumerate(evaluation_order(samples)):
        if sample.doc_id in done:
            continue
        if ranges and ranges[-1].stop == index and len(ranges[-1]) < size:
            ranges[-1] = range(ranges[-1].start, index + 1)
        else:
            ranges.append(range(index, index + 1))
    return ranges


def evaluate_samples(
    model: LanguageModel,
    task: Task,
    samples: Sequence[Sample],
    *,
    max_new_tokens: int,
    label: str = "",
) -> list[SampleRow]:
    """All rows at once, in the samples' order, for callers that need no persistence
    between chunks."""
    rows = {
        row.doc_id: row
        for chunk in evaluate_chunks(
            model, task, samples, max_new_tokens=max_new_tokens, label=label
        )
        for row in chunk
    }
    return [rows[sample.doc_id] for sample in samples]


def _score_choices(model: LanguageModel, task: Task, chunk: Sequence[Sample]) -> list[SampleRow]:
    requests = [
        (sample.prompt, task.target_delimiter + choice)
        for sample in chunk
        for choice in sample.choices
    ]
    scores = iter(model.loglikelihoods(requests))
    rows: list[SampleRow] = []
    for sample in chunk:
        values = [next(scores) for _ in sample.choices]
        invalid = any(math.isnan(v) for v in values)
        chosen = -1 if invalid else int(np.argmax(values))
        top = 0.0 if invalid else max(values)
        weights = [] if invalid else [math.exp(v - top) for v in values]
        assert sample.gold is not None
        rows.append(
            ChoiceRow(
                doc_id=sample.doc_id,
                target=sample.target,
                prediction=sample.choices[chosen] if chosen >= 0 else "",
                choices=list(sample.choices),
                loglikelihoods=[None if math.isnan(v) else v for v in values],
                chosen=chosen,
                # softmax over the options: how sure the model was of its choice
                chosen_probability=weights[chosen] / sum(weights) if weights else None,
                gold=sample.gold,
                invalid_loglikelihood=invalid,
                metrics={"acc": accuracy(chosen, sample.gold)},
            )
        )
    return rows


def _parsed_choices(
    model: LanguageModel,
    chunk: Sequence[Sample],
    answers: Sequence[Completion],
    scoring: ChoiceScoring,
) -> list[SampleRow]:
    """Generate-then-parse rows: the option each answer gives, or none (invalid: wrong), or
    an answer cut off (truncated: wrong), with its reasoning and the rule that read it."""
    rows: list[SampleRow] = []
    for sample, answer in zip(chunk, answers, strict=True):
        assert sample.gold is not None
        read = extract_choice(
            answer.text,
            sample.choices,
            hit_limit=answer.hit_limit,
            final_line_required=scoring.method == "cot",
            tags=scoring.tags,
            reasoning=answer.reasoning,
        )
        chosen = -1 if read.choice is None else read.choice
        rows.append(
            ChoiceRow(
                doc_id=sample.doc_id,
                target=sample.target,
                prediction="" if read.choice is None else sample.choices[chosen],
                choices=list(sample.choices),
                loglikelihoods=[],
                chosen=chosen,
                gold=sample.gold,
                answer=answer.text,
                reasoning=read.reasoning,
                reasoning_tokens=_trace_tokens(model, answer, read.reasoning),
                answer_tokens=answer.tokens,
                hit_token_limit=answer.hit_limit,
                extracted_by=read.rule,
                metrics={
                    "acc": accuracy(chosen, sample.gold),
                    INVALID_ANSWER: float(read.invalid),
                    TRUNCATED: float(read.truncated),
                },
            )
        )
    return rows


def answer_seed(seed: int, doc_id: str, repeat: int) -> int:
    """The seed of one sampled answer: from the model's seed, the question and the repeat
    alone, so an answer does not depend on what else was asked with it or before it."""
    digest = hashlib.sha256(f"{seed}\0{doc_id}\0{repeat}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def _sampled_rows(
    model: LanguageModel,
    task: Task,
    chunk: Sequence[Sample],
    max_new_tokens: int,
    choices_by: ChoiceScoring | None,
    sampling: SamplingSettings,
    bar: tqdm,
) -> list[SampleRow]:
    """Every question of a chunk answered ``repeats`` times in one call, each answer with a
    seed of its own, and the answers of each question folded into its row."""
    repeats = sampling.repeats
    asked = [sample for sample in chunk for _ in range(repeats)]
    seeds = tuple(answer_seed(sampling.seed, s.doc_id, r) for s in chunk for r in range(repeats))
    drawn = Sampling(sampling.temperature, sampling.top_p, seeds)

    def progress(done: float) -> None:
        bar.update(done / repeats)  # the bar counts questions, not answers

    if task.kind == "multiple_choice" and choices_by is not None:
        messages = [choices_by.message(sample) for sample in asked]
        answers = model.complete(messages, choices_by.max_new_tokens, progress, drawn)
        singles = _parsed_choices(model, asked, answers, choices_by)
        fold = _folded_choice
    else:
        answers = model.complete([s.prompt for s in asked], max_new_tokens, progress, drawn)
        singles = _generation_rows(task, asked, [answer.text for answer in answers])
        fold = _folded_generation
    return [
        fold(singles[i : i + repeats], seeds[i : i + repeats])
        for i in range(0, len(singles), repeats)
    ]


def _folded_choice(rows: Sequence[SampleRow], seeds: Sequence[int]) -> SampleRow:
    """One question's row from the rows of its sampled answers: the majority vote's option,
    shown with the first answer that gave it; each score the mean over the answers, and
    pass@k (k = the repeats) and the majority vote's accuracy."""
    answers = [row for row in rows if isinstance(row, ChoiceRow)]
    majority = majority_vote([row.chosen for row in answers])
    shown = next((row for row in answers if row.chosen == majority), answers[0])
    right = sum(int(row.metrics["acc"]) for row in answers)
    metrics = _mean_scores(answers)
    if len(answers) > 1:
        metrics[PASS_AT_K] = pass_at_k(len(answers), right, len(answers))
        metrics[MAJORITY_ACC] = accuracy(majority, shown.gold)
    repeats = [
        SampledAnswer(
            seed=seed,
            answer=row.answer or "",
            metrics=row.metrics,
            chosen=row.chosen,
            extracted_by=row.extracted_by,
            reasoning=row.reasoning,
            reasoning_tokens=row.reasoning_tokens,
            answer_tokens=row.answer_tokens,
            hit_token_limit=row.hit_token_limit,
        )
        for row, seed in zip(answers, seeds, strict=True)
    ]
    return shown.model_copy(update={"metrics": metrics, "repeats": repeats})


def _folded_generation(rows: Sequence[SampleRow], seeds: Sequence[int]) -> SampleRow:
    """One question's row from its sampled answers: the first shown, each score the mean over
    the answers, BLEU's statistics their sums (corpus BLEU over every answer)."""
    answers = [row for row in rows if isinstance(row, GenerationRow)]
    stats = np.sum([row.bleu_stats or [] for row in answers], axis=0)
    repeats = [
        SampledAnswer(seed=seed, answer=row.prediction, metrics=row.metrics)
        for row, seed in zip(answers, seeds, strict=True)
    ]
    return answers[0].model_copy(
        update={
            "metrics": _mean_scores(answers),
            "bleu_stats": [int(v) for v in stats],
            "repeats": repeats,
        }
    )


def _mean_scores(rows: Sequence[SampleRow]) -> dict[str, float]:
    """Each metric's mean over the rows of one question's answers."""
    return {name: float(np.mean([row.metrics[name] for row in rows])) for name in rows[0].metrics}


def _trace_tokens(model: LanguageModel, answer: Completion, trace: str | None) -> int | None:
    """The reasoning's length in tokens: as the server counted it, else by the tokenizer."""
    if answer.reasoning_tokens is not None:
        return answer.reasoning_tokens
    return None if trace is None else count_tokens(model, trace)


def _generation_rows(
    task: Task, chunk: Sequence[Sample], outputs: Sequence[str]
) -> list[SampleRow]:
    """Each answer with the per-sample score of every metric of the task that has a scorer
    (or the task's own scoring's), and sacrebleu's sufficient statistics (corpus BLEU of any
    subset is a sum away)."""
    targets = [sample.target for sample in chunk]
    scores = answer_scores(task.metric_names, outputs, targets)
    reads = [
        task.answer_scoring.score(sample, output) if task.answer_scoring else None
        for sample, output in zip(chunk, outputs, strict=True)
    ]
    return [
        GenerationRow(
            doc_id=sample.doc_id,
            target=sample.target,
            prediction=output,
            metrics={
                **{name: float(values[i]) for name, values in scores.items()},
                **(read.metrics if read else {}),
            },
            bleu_stats=[int(v) for v in stats],
            extracted=None if read is None else read.extracted or "",
        )
        for i, (sample, output, stats, read) in enumerate(
            zip(chunk, outputs, bleu_statistics(outputs, targets), reads, strict=True)
        )
    ]


def input_row(sample: Sample) -> InputRow:
    """What every model was asked about one sample: written once per run, not per model."""
    return InputRow(
        doc_id=sample.doc_id,
        prompt=sample.prompt,
        target=sample.target,
        choices=list(sample.choices) if sample.choices else None,
        gold=sample.gold if sample.choices else None,
        metadata=dict(sample.metadata),
    )


def load_entry(
    entry: ModelEntry,
    spec: str | None = None,
    adapter: str | None = None,
    *,
    later_adapters: Sequence[str | None] = (),
) -> Any:
    """The model a config entry describes (or ``spec`` + ``adapter`` in its place, as
    training made them), loaded with the entry's settings; ``later_adapters``: those of the
    entries that share its base (shared_base_key), which it may serve next."""
    weights = (spec, adapter) if spec else (entry.model, entry.adapter)
    return load_with(*weights, LoadSettings.of(entry), later_adapters)


def shared_base_key(entry: ModelEntry, spec: str) -> str | None:
    """What entries must have equal to be served by one loaded base, their adapters swapped
    in turn: the base and every setting of its loading (not the adapter). None for models
    that load no weights here (a backend's prefix names them: fake, served by an endpoint)."""
    if prefixed(spec) is not None:
        return None
    settings = entry.model_dump(mode="json", include=set(shared_base_settings()))
    return json.dumps({"model": spec, **settings}, sort_keys=True)


def shared_base_settings() -> tuple[str, ...]:
    """The entry settings an engine loads weights with: the ones every engine reads, and
    each engine's own (vllm's parallelism)."""
    engines = [backend for backend in BACKENDS.values() if backend.engine]
    own = (name for engine in engines for name in engine.setting_names)
    return (*LoadSettings.common_keys(), *own)


def answers_identity(entry: ModelEntry, labels: tuple[str, ...] = ()) -> dict[str, Any]:
    """What a model entry's answers depend on, known before it loads: the entry (not how
    requests to a server are sent, nor where it runs, nor ``labels``, fields that only name
    it), the sha256 of its local weights, and what its server says it serves."""
    neutral = {"resources", *answer_neutral_settings(), *labels}
    identity = {
        "model": entry.model_dump(mode="json", exclude=neutral),
        "weights": weights_identity(entry.model),
        "adapter_weights": weights_identity(entry.adapter) if entry.adapter else None,
    }
    server = served_identity(entry.model, LoadSettings.of(entry))
    return identity if server is None else {**identity, "server": server}


def close_engine(model: Any) -> None:
    """Stop what a backend runs beside this process (vLLM's engine processes), before the
    caller drops the model and the next one loads."""
    close = getattr(model, "close", None)
    if close is not None:
        close()
