"""Suites: ``tasks: [multimedqa]`` expands to lm-eval's multimedqa group; the suite average
equals lm-eval's own group aggregation on the same per-task results; its interval and paired
test resample within tasks (checked against their analytic variance); the report shows it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import lm_eval_task_manager

from medharness.cli import main
from medharness.config import parse_config
from medharness.core.records import ChoiceRow, MetricValue, TaskResult
from medharness.tasks.metrics.stats import stratified_resampled_means
from medharness.tasks.metrics.suites import paired_suite_difference, suite_result
from medharness.tasks.suites import SUITES

OUR_NAME = {"medqa_4options": "medqa_4opt"}  # lm-eval's names where ours differ


def lm_eval_group(name: str) -> tuple[Any, dict[str, Any]]:
    """lm-eval's own Group built from its YAML, with its leaf tasks as bare shells (their
    datasets are not loaded: aggregation reads only their names), and the YAML."""
    from lm_eval.api.group import Group
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.config.task import TaskConfig
    from lm_eval.tasks._yaml_loader import load_yaml

    entry = lm_eval_task_manager()._entry(name)
    assert entry is not None and entry.yaml_path is not None
    config = load_yaml(entry.yaml_path, resolve_func=True)
    group = Group.from_config({key: value for key, value in config.items() if key != "task"})
    for item in config["task"]:
        leaf = ConfigurableTask.__new__(ConfigurableTask)
        leaf._config = TaskConfig(task=item if isinstance(item, str) else item["task"])
        group.add(leaf)
    return group, config


def test_multimedqa_is_lm_evals_group_of_that_name() -> None:
    group, config = lm_eval_group("multimedqa")
    names = [OUR_NAME.get(task.task_name, task.task_name) for task in group.get_all_tasks()]
    assert tuple(names) == SUITES["multimedqa"]
    assert [(a["metric"], a["weight_by_size"]) for a in config["aggregate_metric_list"]] == [
        ("acc", True)
    ]


def config_with(tasks: list[Any], **extra: Any) -> dict[str, Any]:
    return {"name": "s", "models": [{"name": "a", "model": "fake:x.yaml"}], "tasks": tasks, **extra}


def test_a_suite_in_tasks_becomes_its_tasks_and_the_resolved_config_says_so() -> None:
    config = parse_config(
        config_with(
            [{"name": "multimedqa", "limit": 5, "source": "hub"},
             {"name": "medqa_4opt", "limit": 2}, "mine"],
            suites={"mine": ["medqa_5opt", "medqa_4opt"]},
        ),
        "run.yaml",
    )  # fmt: skip
    by_name = {entry.name: entry for entry in config.tasks}
    assert list(by_name) == [
        *(t for t in SUITES["multimedqa"] if t != "medqa_4opt"),
        "medqa_4opt",
        "medqa_5opt",
    ]
    assert by_name["medqa_4opt"].limit == 2 and by_name["medqa_4opt"].source is None
    assert by_name["mmlu_anatomy"].limit == 5 and by_name["mmlu_anatomy"].source == "hub"
    assert by_name["medqa_5opt"].limit is None
    assert config.suites == {
        "multimedqa": list(SUITES["multimedqa"]), "mine": ["medqa_5opt", "medqa_4opt"]
    }  # fmt: skip
    assert parse_config(config.model_dump(mode="json"), "manifest") == config


def write_scripts(folder: Path) -> tuple[Path, Path]:
    """Two fake models that choose differently on some questions of every task."""
    base, other = folder / "base.yaml", folder / "other.yaml"
    base.write_text(
        "choose:\n  - {match: 'symptom 1', answer: 'B'}\n  - {match: 'structure 2', answer: 'C'}\n"
    )
    other.write_text(
        "choose:\n  - {match: 'symptom', answer: 'B'}\n  - {match: 'structure', answer: 'D'}\n"
        "  - {match: 'nerve', answer: 'C'}\n"
    )
    return base, other


@pytest.fixture
def suite_run(data_env: Path, tmp_path: Path) -> Path:
    base, other = write_scripts(tmp_path)
    path = tmp_path / "run.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "suite",
                "models": [
                    {"name": "base", "model": f"fake:{base}"},
                    {"name": "tuned", "model": f"fake:{other}"},
                ],
                "tasks": ["multimedqa"],
                "bootstrap_resamples": 500,
            }
        )
    )
    assert main(["run", str(path), "--out", str(tmp_path / "runs")]) == 0
    return tmp_path / "runs" / "suite"


def test_the_suite_average_is_lm_evals_group_aggregation(suite_run: Path) -> None:
    results = json.loads((suite_run / "results.json").read_text())
    group, _ = lm_eval_group("multimedqa")
    for model in ("base", "tuned"):
        ours = results["suites"][model]["multimedqa"]
        per_task = results["results"][model]
        task_metrics = {
            leaf.task_name: {
                "acc,none": per_task[OUR_NAME.get(leaf.task_name, leaf.task_name)]["metrics"][
                    "acc"
                ]["value"],
                "sample_len": per_task[OUR_NAME.get(leaf.task_name, leaf.task_name)]["n"],
            }
            for leaf in group.get_all_tasks()
        }
        theirs = group.aggregate(task_metrics)
        assert ours["metrics"]["acc"]["value"] == pytest.approx(theirs["acc,none"], abs=1e-12)
        assert ours["n"] == theirs["sample_len"]
        pooled = [
            json.loads(line)["metrics"]["acc"]
            for task in SUITES["multimedqa"]
            for line in (suite_run / "samples" / model / f"{task}.jsonl").read_text().splitlines()
        ]
        assert ours["metrics"]["acc"]["value"] == pytest.approx(np.mean(pooled), abs=1e-12)
        low, high = ours["metrics"]["acc"]["ci95"]
        assert low <= ours["metrics"]["acc"]["value"] <= high
    base, other = (
        results["suites"][m]["multimedqa"]["metrics"]["acc"]["value"] for m in results["suites"]
    )
    compared = results["suites"]["tuned"]["multimedqa"]["vs_baseline"]["acc"]
    assert base != other
    assert compared["difference"] == pytest.approx(other - base, abs=1e-12)
    assert results["suites"]["base"]["multimedqa"]["vs_baseline"] == {}


def rows_of(values: np.ndarray) -> list[ChoiceRow]:
    return [
        ChoiceRow(
            doc_id=str(i), target="A", prediction="A", choices=["A", "B"], loglikelihoods=[0, -1],
            chosen=0, gold=0, metrics={"acc": float(v)},
        )
        for i, v in enumerate(values)
    ]  # fmt: skip


def test_interval_and_paired_test_have_the_variance_of_resampling_within_tasks() -> None:
    """The replicates' spread against the analytic standard error of a stratified mean,
    sqrt(sum n_t var_t) / N (var_t the task's population variance), for one model's accuracy
    and for the paired difference of two."""
    rng = np.random.default_rng(7)
    sizes, rates = (40, 120, 300), (0.9, 0.5, 0.2)
    a = [(rng.random(n) < p).astype(float) for n, p in zip(sizes, rates, strict=True)]
    b = [np.where(rng.random(len(x)) < 0.3, 1 - x, x) for x in a]
    total = sum(sizes)
    for groups in (a, [y - x for x, y in zip(a, b, strict=True)]):
        replicates = stratified_resampled_means(groups, 20_000, 3)
        analytic = np.sqrt(sum(len(g) * g.var() for g in groups)) / total
        assert replicates.std() == pytest.approx(analytic, rel=0.03)
        assert replicates.mean() == pytest.approx(np.concatenate(groups).mean(), abs=analytic / 10)
    results = [
        TaskResult(n=len(x), metrics={"acc": MetricValue(value=float(x.mean()), ci95=(0, 1))})
        for x in a
    ]
    summary = suite_result(["t0", "t1", "t2"], results, [rows_of(x) for x in a],
                           resamples=20_000, seed=3).metrics["acc"]  # fmt: skip
    error = np.sqrt(sum(len(x) * x.var() for x in a)) / total
    assert summary.value == pytest.approx(np.concatenate(a).mean(), abs=1e-12)
    assert summary.ci95 == pytest.approx(
        (summary.value - 1.96 * error, summary.value + 1.96 * error), abs=0.006
    )
    value_a, value_b, resampled = paired_suite_difference(
        "acc", [rows_of(x) for x in a], [rows_of(y) for y in b], resamples=20_000, seed=3
    )
    assert value_a == pytest.approx(np.concatenate(a).mean())
    assert value_b == pytest.approx(np.concatenate(b).mean())
    differences = [y - x for x, y in zip(a, b, strict=True)]
    assert resampled == pytest.approx(stratified_resampled_means(differences, 20_000, 3))


def test_the_report_shows_the_suite_and_refuses_an_edited_average(
    suite_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "report.html"
    assert main(["report", str(suite_run), "-o", str(report)]) == 0
    html = report.read_text()
    results = json.loads((suite_run / "results.json").read_text())
    value = results["suites"]["tuned"]["multimedqa"]["metrics"]["acc"]["value"]
    section = html[html.index('id="task-multimedqa"') :]
    assert f"{value * 100:.2f}" in section[: section.index("<h2", 10)]
    assert "paired bootstrap within tasks (500 resamples)" in section
    results["suites"]["tuned"]["multimedqa"]["metrics"]["acc"]["value"] = value + 0.01
    (suite_run / "results.json").write_text(json.dumps(results))
    capsys.readouterr()
    assert main(["report", str(suite_run), "-o", str(report)]) == 2
    assert "suite tuned/multimedqa disagrees with its tasks' sample logs" in capsys.readouterr().err


def test_the_gate_the_leaderboard_and_card_claims_read_the_suite_average(
    suite_run: Path, tmp_path: Path
) -> None:
    from medharness.reports.cards import Claim, judge_claim
    from medharness.reports.gate import Policy, evaluate_gate
    from medharness.reports.leaderboard import build_leaderboard
    from medharness.reports.runs import RunData

    results = json.loads((suite_run / "results.json").read_text())
    tuned = results["suites"]["tuned"]["multimedqa"]
    value, compared = tuned["metrics"]["acc"]["value"], tuned["vs_baseline"]["acc"]

    def gate(**rules: Any) -> list[Any]:
        policy = Policy.model_validate({"candidate": "tuned", "min_samples": 50, **rules})
        return evaluate_gate(policy, suite_run, None).rules

    rules = gate(floors={"multimedqa.acc": value}, regressions={"multimedqa.acc": 100})
    assert [rule.verdict for rule in rules] == ["PASS"] * 3  # n, floor, regression
    assert rules[0].evidence == f"n = {tuned['n']}"
    drop = -compared["difference"] * 100  # the paired bootstrap within the suite's tasks
    assert rules[2].estimate == pytest.approx(drop, abs=1e-9)
    assert gate(floors={"multimedqa.acc": value + 0.001})[1].verdict == "FAIL"
    assert gate(min_samples=tuned["n"] + 1, floors={"multimedqa.acc": 0})[0].verdict == "FAIL"
    margin = gate(tasks={"multimedqa": {"metrics": {"acc": {"max_drop": 100, "floor": 0}}}})
    assert [rule.verdict for rule in margin] == ["PASS"] * 3  # n, floor, margin: new rules too

    board = build_leaderboard([suite_run])
    assert board["columns"][0] == ("multimedqa", "acc")
    assert board["rows"][1]["cells"][0]["value"] == pytest.approx(value * 100)

    run = RunData.open(suite_run)
    claims = {
        "value": Claim(id="v", kind="value", text="", task="multimedqa", metric="acc", value=value),
        "delta": Claim(
            id="d", kind="delta", text="", task="multimedqa", metric="acc",
            value=compared["difference"],
        ),
    }  # fmt: skip
    for claim in claims.values():
        assert judge_claim(claim, run).status == "reproduced"
    measured = judge_claim(claims["delta"], run).detail
    assert f"tuned - base {compared['difference']:+.4f}" in measured


def test_eval_takes_a_suite_and_prints_its_average(
    data_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = write_scripts(tmp_path)[0]
    argv = ["eval", "--model", f"fake:{script}", "--tasks", "multimedqa", "--limit", "2"]
    assert main([*argv, "--out", str(tmp_path / "runs")]) == 0
    results = json.loads((tmp_path / "runs/eval-base/results.json").read_text())
    assert list(results["results"]["base"]) == list(SUITES["multimedqa"])
    suite = results["suites"]["base"]["multimedqa"]
    assert suite["n"] == 2 * len(SUITES["multimedqa"])
    row = next(line for line in capsys.readouterr().out.splitlines() if "(suite)" in line)
    assert row.split()[:4] == ["base", "multimedqa", "(suite)", "acc"]
    assert float(row.split()[4]) == pytest.approx(suite["metrics"]["acc"]["value"] * 100, abs=0.01)
