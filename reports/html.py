"""The comparative report: one self-contained HTML file (and a Markdown metrics block).

Input is one or more run directories; the first model of the first run is the baseline.
Samples are embedded gzip-compressed for the in-page browser, which builds every element
with ``textContent`` so model text is never parsed as HTML.
"""

from __future__ import annotations

import base64
import gzip
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from medharness.core.errors import UserError
from medharness.core.records import (
    ChoiceRow,
    GenerationRow,
    MetricValue,
    SampleRow,
    SuiteResult,
    TaskResult,
)
from medharness.reports.charts import bar_chart, color, line_chart
from medharness.reports.comparability import describe, differences
from medharness.reports.compare import (
    Comparison,
    answer_lengths,
    breakdown,
    compare_suite,
    compare_task,
    corrected,
)
from medharness.reports.runs import RunData
from medharness.tasks.judging.jury import OVERALL
from medharness.tasks.metrics import REPEATED_METRICS, is_metric
from medharness.tasks.metrics import metric as metric_of
from medharness.tasks.metrics.stats import Correction


def points(metric: str, value: float) -> float:
    """A value in points: every column of a report reads 0-100."""
    return metric_of(metric).to_points(value) if is_metric(metric) else value


def in_points(metric: str, value: MetricValue | None) -> tuple[float, float, float] | None:
    """A stored metric as (value, low, high) in points."""
    if value is None:
        return None
    low, high = value.ci95
    return points(metric, value.value), points(metric, low), points(metric, high)


@dataclass(frozen=True)
class Entry:
    """A model as the report shows it: its label, and where its results live."""

    label: str
    run: RunData
    model: str

    def has(self, task: str) -> bool:
        return task in self.run.results.results[self.model]

    def result(self, task: str) -> TaskResult:
        return self.run.results.results[self.model][task]

    def suite(self, name: str) -> SuiteResult | None:
        return self.run.results.suites.get(self.model, {}).get(name)

    def samples(self, task: str) -> list[SampleRow]:
        return self.run.samples(self.model, task)


def entries_of(runs: list[RunData]) -> list[Entry]:
    """Every model of every run; labels gain the run name only where names clash."""
    pairs = [(run, model) for run in runs for model in run.models]
    names = [model for _, model in pairs]
    return [
        Entry(model if names.count(model) == 1 else f"{run.name}/{model}", run, model)
        for run, model in pairs
    ]


def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("medharness.reports", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pts"] = lambda value: "—" if value is None else f"{value:.2f}"
    # a written verdict's whole number as it was written; a probability-weighted one to 2 places
    env.filters["score"] = lambda value: (
        f"{value:g}" if float(value).is_integer() else f"{value:.2f}"
    )
    env.filters["metric_name"] = lambda name: (
        metric_of(name).display_name if is_metric(name) else name
    )
    return env


def primary_metric(metrics: list[str]) -> str:
    return "acc" if "acc" in metrics else ("rouge1" if "rouge1" in metrics else metrics[0])


def comparisons_for(
    task: str,
    baseline: Entry,
    others: list[Entry],
    metrics: list[str],
    seed: int,
    resamples: int,
) -> dict[str, list[Comparison] | str]:
    """Candidate label -> its comparisons with the baseline, or why there are none."""
    found: dict[str, list[Comparison] | str] = {}
    for entry in others:
        differing = differences(baseline.run, entry.run, task)
        if differing:
            found[entry.label] = f"differs from the baseline in {describe(differing)}"
            continue
        try:
            tested = compare_task(
                task,
                baseline.label,
                entry.label,
                baseline.samples(task),
                entry.samples(task),
                metrics,
                resamples=resamples,
                seed=seed,
            )
        except UserError as exc:
            found[entry.label] = str(exc)
            continue
        alike = answer_alike(baseline, entry, task)
        found[entry.label] = [replace(c, by_construction=alike) for c in tested]
    return found


def answer_alike(baseline: Entry, entry: Entry, task: str) -> bool:
    """Two models of one run whose answers on ``task`` are equal by construction."""
    definition = baseline.run.task(task)
    first, second = baseline.run.model_entry(baseline.model), entry.run.model_entry(entry.model)
    if baseline.run is not entry.run or definition is None or first is None or second is None:
        return False
    return first.answers_alike(second, definition.kind)


def summary_rows(
    task: str,
    entries: list[Entry],
    baseline: Entry,
    metrics: list[str],
    comparisons: dict[str, list[Comparison] | str],
    results: dict[str, TaskResult | SuiteResult] | None = None,
) -> list[dict[str, Any]]:
    """One row per model; ``results`` (label -> result) where they are not the entries'
    own results on ``task`` (a suite's)."""
    outcome = results or {entry.label: entry.result(task) for entry in entries}
    rows = []
    base_metrics = outcome[baseline.label].metrics
    for entry in entries:
        result = outcome[entry.label]
        tested = comparisons.get(entry.label)
        by_metric = {c.metric: c for c in tested} if isinstance(tested, list) else {}
        cells: list[dict[str, Any] | None] = []
        for metric in metrics:
            shown = in_points(metric, result.metrics.get(metric))
            if shown is None:
                cells.append(None)
                continue
            cell: dict[str, Any] = dict(zip(("value", "low", "high"), shown, strict=True))
            if isinstance(tested, str):
                cell["not_comparable"] = tested
            elif entry is not baseline and metric in base_metrics:
                base = points(metric, base_metrics[metric].value)
                cell["delta"] = cell["value"] - base
                cell["relative"] = cell["delta"] / base * 100 if base else None
                if metric in by_metric:
                    cell["verdict"] = by_metric[metric].verdict
                    cell["p"] = by_metric[metric].p_value
            cells.append(cell)
        rows.append(
            {"label": entry.label, "n": result.n, "cells": cells, "baseline": entry is baseline}
        )
    return rows


def comparison_rows(comparisons: dict[str, list[Comparison] | str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for label, found in comparisons.items():
        if isinstance(found, str):
            rows.append({"candidate": label, "error": found})
            continue
        for c in found:
            rows.append(
                {
                    "candidate": label,
                    "metric": c.metric,
                    "n": c.n,
                    "difference": points(c.metric, c.difference),
                    "low": points(c.metric, c.ci95[0]),
                    "high": points(c.metric, c.ci95[1]),
                    "relative": (c.difference / c.baseline_value * 100)
                    if c.baseline_value
                    else None,
                    "p": c.p_value,
                    "p_adjusted": c.p_adjusted,
                    "test": c.test,
                    "verdict": c.verdict,
                    "identical": c.identical,
                    "by_construction": c.by_construction,
                    "unadjusted_mark": c.interval_disagrees(),
                    "detectable": points(c.metric, c.detectable),
                    "effect": None
                    if c.effect_size is None or math.isinf(c.effect_size)
                    else c.effect_size,
                    "effect_name": c.effect_name,
                }
            )
    return rows


def breakdown_tables(
    task: str, entries: list[Entry], keys: list[str], metric: str
) -> list[dict[str, Any]]:
    tables = []
    for key in keys:
        per_model = {
            e.label: breakdown(e.samples(task), e.run.inputs(task), key, metric) for e in entries
        }
        groups = sorted({g for table in per_model.values() for g in table})
        if len(groups) < 2:
            continue
        values = [v for table in per_model.values() for v, _ in table.values()]
        top = max(values) or 1.0
        rows = []
        for group in groups:
            n = next((t[group][1] for t in per_model.values() if group in t), 0)
            cells = []
            for entry in entries:
                found = per_model[entry.label].get(group)
                cells.append(
                    None
                    if found is None
                    else {"value": points(metric, found[0]), "shade": found[0] / top}
                )
            rows.append({"group": group, "n": n, "cells": cells})
        tables.append({"key": key, "metric": metric, "rows": rows})
    return tables


JUDGED_SAMPLES_SHOWN = 200  # per task; every verdict stays in the sample logs


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + " …"


def breakdown_keys(entry: Entry, task: str) -> list[str]:
    definition = entry.run.task(task)
    return list(definition.breakdown_keys) if definition else []


def jury_section(task: str, present: list[Entry]) -> dict[str, Any] | None:
    """The jury of a task: per model its agreement and unreadable verdicts, and per answer
    each judge's scores and rationale beside it; None where no answer was judged."""
    juries = {e.label: e.result(task).settings.get("jury") for e in present}
    if not any(juries.values()):
        return None
    logs = {e.label: {row.doc_id: row for row in e.samples(task)} for e in present}
    inputs = present[0].run.inputs(task)
    samples = []
    for doc_id in list(logs[present[0].label])[:JUDGED_SAMPLES_SHOWN]:
        answers = []
        for entry in present:
            row = logs[entry.label].get(doc_id)
            if not isinstance(row, GenerationRow) or not row.judgments:
                continue
            verdicts = [
                {
                    "judge": j.judge,
                    "scores": j.scores,
                    "rationale": j.rationale,
                    "output": "" if j.scores else clip(j.output, 400),
                    "attempts": j.attempts,
                }
                for j in row.judgments
            ]
            answers.append(
                {"model": entry.label, "text": clip(row.prediction, 1200), "verdicts": verdicts}
            )
        if answers:
            asked = inputs.get(doc_id)
            samples.append(
                {
                    "doc_id": doc_id,
                    "question": asked.prompt if asked else "",
                    "reference": clip(asked.target, 600) if asked else "",
                    "answers": answers,
                }
            )
    manifest = present[0].run.manifest
    return {
        "models": [{"label": label, **jury} for label, jury in juries.items() if jury],
        "judges": manifest.judges,
        "samples": samples,
        "shown": len(samples),
    }


def browser_payload(tasks: list[str], entries: list[Entry]) -> str:
    """Every sample of every task, column-oriented, gzip + base64, for the sample browser.

    Per task: ids, prompts, targets and metadata once; per model (null where a model lacks
    the task) its answers, primary-metric scores and, for multiple choice, the probability of
    the chosen option, in the order of ``ids``."""
    data: dict[str, Any] = {"models": [e.label for e in entries], "tasks": {}}
    for task in tasks:
        present = [e for e in entries if e.has(task)]
        first = present[0].samples(task)
        inputs = present[0].run.inputs(task)
        ids = [row.doc_id for row in first]
        asked = [inputs[doc] for doc in ids]
        kind = "choice" if isinstance(first[0], ChoiceRow) else "generate"
        metric = primary_metric(list(first[0].metrics))
        columns: list[Any] = []
        for entry in entries:
            if not entry.has(task):
                columns.append(None)
                continue
            by_id = {row.doc_id: row for row in entry.samples(task)}
            rows = [by_id.get(doc) for doc in ids]
            column: dict[str, Any] = {
                "text": [row.prediction if row else "" for row in rows],
                "score": np.round(
                    [row.metrics[metric] if row else 0.0 for row in rows], 4
                ).tolist(),
            }
            if kind == "choice":
                column["p"] = [None if p is None else round(p, 3) for p in map(probability, rows)]
                column.update(parsed_columns(rows))
            columns.append(column)
        data["tasks"][task] = {
            "kind": kind,
            "metric": metric,
            "ids": ids,
            "prompts": [row.prompt for row in asked],
            "targets": [row.target for row in asked],
            "meta": [row.metadata for row in asked],
            "answers": columns,
        }
    raw = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
    return base64.b64encode(gzip.compress(raw, compresslevel=1, mtime=0)).decode()


def parsed_columns(rows: list[SampleRow | None]) -> dict[str, list[Any]]:
    """Where options were read from generated answers: each answer as written, the rule
    that read its option (or none, or truncated) and its reasoning trace; nothing else."""
    parsed = [row if isinstance(row, ChoiceRow) else None for row in rows]
    if not any(row is not None and row.extracted_by is not None for row in parsed):
        return {}
    return {
        "reply": [row.answer if row else None for row in parsed],
        "rule": [row.extracted_by if row else None for row in parsed],
        "reasoning": [row.reasoning if row else None for row in parsed],
    }


def probability(row: SampleRow | None) -> float | None:
    """Softmax probability of the chosen option among the options' log-likelihoods."""
    if not isinstance(row, ChoiceRow):
        return None
    if row.chosen_probability is not None:
        return row.chosen_probability
    values = row.loglikelihoods
    if row.chosen < 0 or not values or any(v is None for v in values):
        return None
    known = [float(v) for v in values if v is not None]
    top = max(known)
    weights = [math.exp(v - top) for v in known]
    return weights[row.chosen] / sum(weights)


def training_charts(entries: list[Entry]) -> list[Markup]:
    """Loss, learning rate and gradient norm per logged step; validation loss and metric
    per evaluation, with the checkpoint kept as the result marked."""
    logs = {e.label: e.run.train_log(e.model) for e in entries}
    logs = {label: log for label, log in logs.items() if log}
    best = {e.label: e.run.best_step(e.model) for e in entries if e.label in logs}
    marks = [(f"{label}: best checkpoint", step) for label, step in best.items() if step]
    charts = []
    for field, title in (
        ("loss", "training loss"),
        ("learning_rate", "learning rate"),
        ("grad_norm", "gradient norm"),
    ):
        series = {
            label: [(r.step, float(v)) for r in log if (v := getattr(r, field)) is not None]
            for label, log in logs.items()
        }
        if any(series.values()):
            charts.append(line_chart(title, series, marks))
    measured = sorted({name for log in logs.values() for r in log for name in r.validation or {}})
    for name in measured:
        series = {
            label: [
                (r.step, r.validation[name]) for r in log if r.validation and name in r.validation
            ]
            for label, log in logs.items()
        }
        charts.append(line_chart(f"validation {name}", series, marks))
    return charts


def charts(task: str, present: list[Entry], metrics: list[str]) -> list[Markup]:
    """Scores on one axis; rates (shares of answers, often 0 or 100) on their own, so a
    100% disclaimer rate does not squash every ROUGE bar."""
    rates = [m for m in metrics if is_metric(m) and metric_of(m).rate]
    scores = [m for m in metrics if m not in rates]
    drawn = []
    for group, width in ((scores, 760), (rates, 300)):
        if group:
            values = [[in_points(m, e.result(task).metrics.get(m)) for m in group] for e in present]
            drawn.append(bar_chart(group, [e.label for e in present], values, width=width))
    return drawn


def verdict_summary(sections: list[dict[str, Any]], candidates: list[str]) -> list[dict[str, Any]]:
    """The first screen: per task, for each candidate (in column order), each metric's verdict
    against the baseline with its difference and interval in points, or why the two cannot
    be compared; None where a candidate lacks the task."""
    rows = []
    for section in sections:
        cells: dict[str, dict[str, Any]] = {}
        for row in section["comparisons"]:
            cell = cells.setdefault(row["candidate"], {"chips": [], "error": None})
            if "error" in row:
                cell["error"] = row["error"]
            else:
                cell["chips"].append(row)
        if cells:
            rows.append({"task": section["name"], "cells": [cells.get(c) for c in candidates]})
    return rows


CORRECTION_NAMES = {"holm": "Holm", "bh": "Benjamini-Hochberg", "none": ""}


def correction_of(run: RunData) -> Correction:
    """The run's chosen multiple-comparison correction (runs written before it: Holm)."""
    chosen = run.manifest.config.get("multiple_comparisons", "holm")
    return chosen if chosen in ("holm", "bh", "none") else "holm"


def correct_together(
    found: dict[str, dict[str, list[Comparison] | str]], method: Correction
) -> int:
    """Adjust every comparison of the report as one family, in place; return its size."""
    made = [
        c
        for per_task in found.values()
        for r in per_task.values()
        if isinstance(r, list)
        for c in r
    ]
    adjusted = iter(corrected(made, method))
    for per_task in found.values():
        for label, result in per_task.items():
            if isinstance(result, list):
                per_task[label] = [next(adjusted) for _ in result]
    return len(made)


def suites_for(
    entries: list[Entry], seed: int, resamples: int
) -> dict[str, tuple[list[Entry], dict[str, list[Comparison] | str]]]:
    """Every suite the baseline reports: the entries that have it, and each other entry's
    comparison with the baseline (or why there is none)."""
    found: dict[str, tuple[list[Entry], dict[str, list[Comparison] | str]]] = {}
    for name in entries[0].run.results.suites.get(entries[0].model, {}):
        present = [entry for entry in entries if entry.suite(name) is not None]
        baseline, members = present[0], baseline_suite(present[0], name).tasks
        comparisons: dict[str, list[Comparison] | str] = {}
        for entry in present[1:]:
            differing = [
                f"{task}: {describe(changed)}"
                for task in members
                if (changed := differences(baseline.run, entry.run, task))
            ]
            if differing or baseline_suite(entry, name).tasks != members:
                comparisons[entry.label] = "differs from the baseline in " + (
                    "; ".join(differing) or "its tasks"
                )
                continue
            try:
                comparisons[entry.label] = compare_suite(
                    name, baseline.label, entry.label,
                    {task: baseline.samples(task) for task in members},
                    {task: entry.samples(task) for task in members},
                    list(baseline_suite(baseline, name).metrics),
                    resamples=resamples, seed=seed,
                )  # fmt: skip
            except UserError as exc:
                comparisons[entry.label] = str(exc)
        found[name] = (present, comparisons)
    return found


def baseline_suite(entry: Entry, name: str) -> SuiteResult:
    result = entry.suite(name)
    assert result is not None
    return result


def suite_section(
    name: str, present: list[Entry], comparisons: dict[str, list[Comparison] | str]
) -> dict[str, Any]:
    """A suite as the report shows a task: a row per model, its paired comparisons."""
    baseline = present[0]
    result = baseline_suite(baseline, name)
    metrics = list(result.metrics)
    return {
        "name": name,
        "suite": result,
        "info": {
            "summary": f"Suite of {len(result.tasks)} tasks ({', '.join(result.tasks)}), "
            "averaged weighted by task size as lm-eval's groups are",
            "n": result.n,
        },
        "baseline": baseline.label,
        "metrics": metrics,
        "rows": summary_rows(
            name,
            present,
            baseline,
            metrics,
            comparisons,
            {entry.label: baseline_suite(entry, name) for entry in present},
        ),
        "comparisons": comparison_rows(comparisons),
        "charts": [],
        "models": [{"label": e.label, "color": color(i)} for i, e in enumerate(present)],
        "breakdowns": [],
        "jury": None,
        "lengths": [],
        "settings": result.settings,
    }


def build_report(run_dirs: list[Path], verify: bool = True) -> dict[str, Any]:
    """Everything the template shows, computed from the run directories alone."""
    runs = [RunData.open(path, verify) for path in run_dirs]
    entries = entries_of(runs)
    tasks: list[str] = []
    for entry in entries:
        tasks.extend(t for t in entry.run.results.results[entry.model] if t not in tasks)
    resamples, seed = runs[0].manifest.bootstrap_settings()
    method = correction_of(runs[0])
    having = {task: [e for e in entries if e.has(task)] for task in tasks}
    found = {
        task: comparisons_for(
            task, present[0], present[1:], list(present[0].result(task).metrics), seed, resamples
        )
        for task, present in having.items()
    }
    suites = suites_for(entries, seed, resamples)
    found.update({name: comparisons for name, (_, comparisons) in suites.items()})
    family = correct_together(found, method)  # one family: every comparison of the report
    sections = [suite_section(name, present, found[name]) for name, (present, _) in suites.items()]
    for task, present in having.items():
        baseline = present[0]
        metrics = list(baseline.result(task).metrics)
        # a sampled model's own metrics (pass@k, majority vote) beside the baseline's
        sampled = [m for m in REPEATED_METRICS if any(m in e.result(task).metrics for e in present)]
        shown = list(dict.fromkeys([*metrics, *sampled]))
        comparisons = found[task]
        generation = "rouge1" in metrics
        sections.append(
            {
                "name": task,
                "info": baseline.run.manifest.tasks.get(task),
                "baseline": baseline.label,
                "metrics": shown,
                "rows": summary_rows(task, present, baseline, shown, comparisons),
                "comparisons": comparison_rows(comparisons),
                "charts": charts(task, present, metrics),
                "models": [{"label": e.label, "color": color(i)} for i, e in enumerate(present)],
                "breakdowns": [
                    table
                    for metric in dict.fromkeys([primary_metric(metrics), OVERALL])
                    if metric in metrics
                    for table in breakdown_tables(
                        task, present, breakdown_keys(baseline, task), metric
                    )
                ],
                "jury": jury_section(task, present) if generation else None,
                "lengths": [{"label": e.label, **answer_lengths(e.samples(task))} for e in present]
                if generation
                else [],
                "settings": baseline.result(task).settings,
            }
        )
    return {
        "title": " + ".join(run.name for run in runs),
        "runs": runs,
        "entries": entries,
        "baseline": entries[0].label,
        "sections": sections,
        "verdicts": verdict_summary(sections, [e.label for e in entries[1:]]),
        "correction": CORRECTION_NAMES[method],
        "family": family,
        "candidates": [e.label for e in entries[1:]],
        "training": training_charts(entries),
        "training_warnings": [
            (entry.label, warning)
            for entry in entries
            for warning in entry.run.training_warnings(entry.model)
        ],
        "sweeps": [
            (f"{run.name} / {model}", sweep)
            for run in runs
            for model, sweep in run.sweeps().items()
        ],
        "manifests": [
            (
                run.name,
                json.dumps(run.manifest.model_dump(mode="json"), indent=2, ensure_ascii=False),
            )
            for run in runs
        ],
        "payload": browser_payload(tasks, entries),
    }


def render_report(run_dirs: list[Path], verify: bool = True) -> str:
    template = environment().get_template("report.html.j2")
    return template.render(**build_report(run_dirs, verify))


def render_run_report(run_dir: Path) -> str:
    """The report a run writes of itself: its results were aggregated from these very sample
    logs a moment ago, so they are not recomputed to be checked."""
    return render_report([run_dir], verify=False)


def render_markdown(run_dirs: list[Path]) -> str:
    """The metrics block of a model card: values, CIs, deltas, and exact metric settings."""
    report = build_report(run_dirs)
    lines = [f"## Evaluation results ({report['title']})", ""]
    for section in report["sections"]:
        lines += [
            f"### {section['name']}",
            "",
            "| model | n | " + " | ".join(section["metrics"]) + " |",
            "|---|---:|" + "---:|" * len(section["metrics"]),
        ]
        for row in section["rows"]:
            cells = []
            for cell in row["cells"]:
                if cell is None:
                    cells.append("—")
                    continue
                text = f"{cell['value']:.2f} [{cell['low']:.2f}, {cell['high']:.2f}]"
                if "not_comparable" in cell:
                    text += " (not comparable)"
                elif "delta" in cell:
                    relative = "" if cell["relative"] is None else f", {cell['relative']:+.1f}%"
                    mark = {"better": " ▲", "worse": " ▼"}.get(cell.get("verdict", ""), "")
                    text += f" ({cell['delta']:+.2f} pts{relative}){mark}"
                cells.append(text)
            suffix = " (baseline)" if row["baseline"] else ""
            lines.append(f"| {row['label']}{suffix} | {row['n']} | " + " | ".join(cells) + " |")
        lines.append("")
        settings = section["settings"]
        if section.get("suite"):
            lines.append(
                "Suite: each task's value weighted by its number of questions (lm-eval's group "
                "aggregation); 95% interval and paired tests from a bootstrap resampling "
                "questions within each task."
            )
        elif "rouge" in settings:
            rouge = settings["rouge"]
            bleu = settings.get("bleu")
            lines.append(
                f"ROUGE: {rouge['package']}, {rouge['score']}, use_stemmer="
                f"{rouge['use_stemmer']}, tokenizer: {rouge['tokenizer']}."
                + (f" BLEU: sacrebleu `{bleu['signature']}` (0-100)." if bleu else "")
            )
        else:
            lines.append(
                "Accuracy: log-likelihood of each option; 95% interval "
                f"{settings.get('acc', {}).get('interval', 'exact')}."
            )
        adjusted = (
            f", p adjusted by {report['correction']} over the report's {report['family']} "
            "comparisons"
            if report["correction"]
            else ""
        )
        lines += [
            "Scores in points (accuracy and ROUGE x100). Brackets: 95% interval. "
            "Deltas vs the baseline in points and relative %; ▲/▼ significant at "
            f"p < 0.05 (McNemar exact for accuracy, paired bootstrap otherwise{adjusted}).",
            "",
        ]
    return "\n".join(lines)
