"""From finished sample logs to results: the jury's verdicts written into the free-text
logs, then each model's result on each task and on each suite the config reports."""

from __future__ import annotations

import sys

from medharness.config import RunConfig
from medharness.core.io import read_jsonl, write_jsonl_atomic
from medharness.core.records import SAMPLE_ROWS, SampleRow, SuiteResult, TaskResult
from medharness.core.rundir import RunDir
from medharness.evaluate import input_row
from medharness.judge import JudgedLog, Jury, judge_logs
from medharness.run.plan import PreparedTask
from medharness.tasks.metrics import aggregate
from medharness.tasks.metrics.suites import suite_results

Results = dict[str, dict[str, TaskResult]]  # model -> task -> result


def sample_rows(run_dir: RunDir, model: str, task: str) -> list[SampleRow]:
    return SAMPLE_ROWS.validate_python(list(read_jsonl(run_dir.sample_log(model, task))))


def apply_jury(
    jury: Jury | None, models: list[str], prepared: list[PreparedTask], run_dir: RunDir
) -> None:
    """Every free-text sample log with the jury's verdicts (or none, without a jury),
    rewritten where that changes it."""
    paths, logs = [], []
    for item in prepared:
        if item.task.kind != "generate":
            continue
        inputs = {sample.doc_id: input_row(sample) for sample in item.samples}
        for name in models:
            paths.append(run_dir.sample_log(name, item.task.name))
            rows = sample_rows(run_dir, name, item.task.name)
            logs.append(
                JudgedLog(f"{name}/{item.task.name}", rows, inputs, item.task.rubric_graded)
            )
    for path, log, rows in zip(paths, logs, judge_logs(jury, logs), strict=True):
        if rows != log.rows:
            write_jsonl_atomic(path, (row.model_dump(mode="json") for row in rows))


def task_results(config: RunConfig, prepared: list[PreparedTask], run_dir: RunDir) -> Results:
    """Every model's result on every task, from its sample log."""
    results: Results = {entry.name: {} for entry in config.models}
    for entry in config.models:
        for item in prepared:
            result = aggregate(
                item.task,
                sample_rows(run_dir, entry.name, item.task.name),
                resamples=config.bootstrap_resamples,
                seed=config.seed,
                metadata={sample.doc_id: sample.metadata for sample in item.samples},
            )
            results[entry.name][item.task.name] = result
            print(f"[{entry.name}] {item.task.name}: " + summary_line(result), file=sys.stderr)
    return results


def suites_of_run(
    config: RunConfig, results: Results, run_dir: RunDir
) -> dict[str, dict[str, SuiteResult]]:
    """Every model's result on each suite the config reports, from its tasks' sample logs."""
    if not config.suites:
        return {}
    rows = {
        (model, task): sample_rows(run_dir, model, task)
        for model in results
        for task in dict.fromkeys(t for members in config.suites.values() for t in members)
    }
    suites = suite_results(
        config.suites, results, rows, resamples=config.bootstrap_resamples, seed=config.seed
    )
    for model, by_suite in suites.items():
        for name, result in by_suite.items():
            print(f"[{model}] {name} (suite): " + summary_line(result), file=sys.stderr)
    return suites


def summary_line(result: TaskResult | SuiteResult) -> str:
    return (
        ", ".join(f"{name} {m.value:.4g}" for name, m in result.metrics.items())
        + f" (n={result.n})"
    )
