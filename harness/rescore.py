"""``medharness rescore``: add metrics to a finished run without generating again.

The jury's verdicts (cached, so only new answers are judged) and any named metric are
recomputed from the sample logs; the logs, results, manifest and report are rewritten
under the run's lock. While they are written a marker file stands in the run directory:
a run killed then is refused by every reader until ``rescore`` is run again.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import Field

from medharness.config import JudgeEntry, JurySettings, RunConfig, parse_config, unique
from medharness.core.errors import UserError
from medharness.core.folders import exclusive, refuse_foreign
from medharness.core.io import write_jsonl_atomic, write_record, write_text_atomic
from medharness.core.records import GenerationRow, Manifest, Rescore, ResultsFile, SampleRow
from medharness.core.rundir import RunDir
from medharness.core.validation import Strict, load_yaml_file, validate_file_data
from medharness.judge import JudgedLog, Jury, judge_logs
from medharness.models.endpoint import refuse_recorded_keys
from medharness.models.loading import LoadSettings
from medharness.reports.html import render_run_report
from medharness.reports.runs import RunData
from medharness.tasks import Task
from medharness.tasks.metrics import METRICS, aggregate, answer_scores
from medharness.tasks.metrics.suites import suite_results


class JudgingFile(Strict):
    """A ``--judges`` file: the config's judging keys on their own."""

    judges: list[JudgeEntry] = Field(min_length=1)
    rubric: str = "medical-qa"
    jury: JurySettings = JurySettings()


def read_judging(path: Path) -> JudgingFile:
    judging = validate_file_data(JudgingFile, load_yaml_file(path, "judges"), str(path), "judges")
    try:
        unique("judge", [judge.name for judge in judging.judges])
    except ValueError as exc:
        raise UserError(f"{path}: {exc}") from None
    return judging


def load_judging(path: Path, config: RunConfig) -> RunConfig:
    judging = read_judging(path)
    return config.model_copy(
        update={"judges": judging.judges, "rubric": judging.rubric, "jury": judging.jury}
    )


def rescore(
    run_dir: Path, *, metrics: list[str], judges_file: Path | None, base_dir: Path
) -> list[str]:
    """Rescore a finished run in place; return what was added or recomputed."""
    refuse_foreign(run_dir)
    marker = RunDir(run_dir).rescoring
    if marker.is_symlink():
        raise UserError(f"{marker} is a symbolic link; medharness writes only files it made")
    # the logs it starts from are verified as the gate verifies them, unless a rescore
    # killed while writing left them disagreeing with results.json (its marker says so)
    run = RunData.open(run_dir, verify=not marker.exists(), rescoring=True)
    config = parse_config(run.manifest.config, str(RunDir(run_dir).manifest))
    if judges_file is not None:
        config = load_judging(judges_file, config)
    else:
        judges = [(f"judge {j.name}", LoadSettings.of(j)) for j in config.judges]
        refuse_recorded_keys(run_dir, judges, (), "name the judges yourself with --judges FILE")
    unknown = [m for m in metrics if m not in METRICS or METRICS[m].scorer is None]
    if unknown:
        scored = ", ".join(name for name, m in METRICS.items() if m.scorer is not None)
        raise UserError(f"cannot rescore {', '.join(unknown)}; per-answer metrics: {scored}")
    if not metrics and not config.judges:
        raise UserError("nothing to rescore: name --metrics, or --judges (the run has no judges)")
    jury = Jury.of(config, base_dir)
    with exclusive(run_dir):
        logs, definitions = rescored_logs(run, metrics, jury)
        resamples, seed = run.manifest.bootstrap_settings()
        task_results = {
            model: {
                task: aggregate(
                    definitions[task],
                    logs[model, task],
                    resamples=resamples,
                    seed=seed,
                    metadata={doc: row.metadata for doc, row in run.inputs(task).items()},
                )
                for task in tasks
            }
            for model, tasks in run.results.results.items()
        }
        suites = run.results.suites.get(run.results.baseline, {})
        results = ResultsFile(
            baseline=run.results.baseline,
            results=task_results,
            suites=suite_results(
                {name: suite.tasks for name, suite in suites.items()}, task_results, logs,
                resamples=resamples, seed=seed,
            ),
        )  # fmt: skip
        rescore = Rescore(
            at=datetime.now(UTC).isoformat(timespec="seconds"),
            metrics=metrics,
            judges=[judge.name for judge in config.judges],
            rubric=jury.rubric.label if jury else None,
        )
        manifest = run.manifest.model_copy(
            update={
                "config": config.model_dump(mode="json"),
                "judges": jury.record() if jury else {},
                "rescored": [*run.manifest.rescored, rescore],
            }
        )
        write_rescored(run_dir, logs, results, manifest)
    return [*metrics, *(f"judge {judge.name}" for judge in config.judges)]


def rescored_logs(
    run: RunData, metrics: list[str], jury: Jury | None
) -> tuple[dict[tuple[str, str], list[SampleRow]], dict[str, Task]]:
    """Every (model, task) log with the named metrics recomputed and the jury's verdicts;
    and each task's definition."""
    definitions = {
        task: known_task(run, task) for tasks in run.results.results.values() for task in tasks
    }
    logs = {
        (model, task): rescored_rows(run.samples(model, task), metrics, definitions[task])
        for model, tasks in run.results.results.items()
        for task in tasks
    }
    judged_keys = [key for key in logs if definitions[key[1]].kind == "generate"]
    judged = judge_logs(
        jury,
        [
            JudgedLog(
                "/".join(key), logs[key], run.inputs(key[1]), definitions[key[1]].rubric_graded
            )
            for key in judged_keys
        ],
    )
    logs.update(zip(judged_keys, judged, strict=True))
    return logs, definitions


def write_rescored(
    run_dir: Path,
    logs: dict[tuple[str, str], list[SampleRow]],
    results: ResultsFile,
    manifest: Manifest,
) -> None:
    """The rewritten files, with the marker standing while they disagree; then the report."""
    run = RunDir(run_dir)
    handle = os.open(run.rescoring, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with os.fdopen(handle, "w", encoding="utf-8") as written:
        written.write("a rescore is writing this run\n")
    for (model, task), rows in logs.items():
        rewritten = (row.model_dump(mode="json") for row in rows)
        write_jsonl_atomic(run.sample_log(model, task), rewritten)
    write_record(run.results, results)
    write_record(run.manifest, manifest)
    run.rescoring.unlink()
    write_text_atomic(run.report, render_run_report(run_dir))


def known_task(run: RunData, name: str) -> Task:
    definition = run.task(name)
    if definition is None:
        raise UserError(f"{run.path}: task {name!r} is not known to this medharness")
    return definition


def rescored_rows(rows: list[SampleRow], metrics: list[str], task: Task) -> list[SampleRow]:
    """Free-text rows with the named per-answer metrics recomputed (those the task has): of
    every sampled answer of a row with repeats, the row's score their mean."""
    names = [name for name in metrics if name in task.metric_names]
    generated = [row for row in rows if isinstance(row, GenerationRow)]
    if not names or not generated:
        return rows
    answers = [answers_of(row) for row in generated]
    scores = answer_scores(
        names,
        [answer for group in answers for answer in group],
        [row.target for row, group in zip(generated, answers, strict=True) for _ in group],
    )
    rescored: list[SampleRow] = []
    start = 0
    for row, group in zip(generated, answers, strict=True):
        each = [{n: float(v[start + i]) for n, v in scores.items()} for i in range(len(group))]
        start += len(group)
        mean = {n: sum(answer[n] for answer in each) / len(each) for n in scores}
        update: dict[str, Any] = {"metrics": {**row.metrics, **mean}}
        if row.repeats is not None:
            update["repeats"] = [
                answer.model_copy(update={"metrics": {**answer.metrics, **new}})
                for answer, new in zip(row.repeats, each, strict=True)
            ]
        rescored.append(row.model_copy(update=update))
    return rescored


def answers_of(row: GenerationRow) -> list[str]:
    """The answers a row's scores are of: its sampled ones, or its one greedy answer."""
    return [row.prediction] if row.repeats is None else [a.answer for a in row.repeats]
