"""MedCalc-Bench: the fixture's ground truths against the calculators' own package, reading
and scoring against the paper's evaluation code, bad rows, and runs end to end."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from medharness.cli import main
from medharness.core.errors import UserError
from medharness.tasks.medcalc import MEDCALC, load, parse_answer, score_answer, stated_answer

FIXTURE = Path(__file__).parent / "fixtures" / "medcalc_bench"
ROWS = list(csv.DictReader((FIXTURE / "test_data.csv").open(newline="", encoding="utf-8")))


# ---- ncbi-nlp/MedCalc-Bench, evaluation/run.py extract_answer and evaluation/evaluate.py
# check_correctness, verbatim but for the prints (commit 20b10f9d66a8c3b0356ae3138533f5ec91666b6a)
def their_extract_answer(answer, calid):  # type: ignore[no-untyped-def]
    calid = int(calid)
    extracted_answer = re.findall(r'[Aa]nswer":\s*(.*?)\}', answer)
    matches = re.findall(r'"step_by_step_thinking":\s*"([^"]+)"\s*,\s*"[Aa]nswer"', answer)
    if matches:
        last_match = matches[-1]
        explanation = last_match
    else:
        explanation = "No Explanation"
    if len(extracted_answer) == 0:
        extracted_answer = "Not Found"
    else:
        extracted_answer = extracted_answer[-1].strip().strip('"')
        if (
            extracted_answer == "str(short_and_direct_answer_of_the_question)"
            or extracted_answer == "str(value which is the answer to the question)"
            or extracted_answer == "X.XX"
        ):
            extracted_answer = "Not Found"
    if calid in [13, 68]:
        match = re.search(
            r"^(0?[1-9]|1[0-2])\/(0?[1-9]|[12][0-9]|3[01])\/(\d{4})", extracted_answer
        )
        if match:
            month = int(match.group(1))
            day = int(match.group(2))
            year = match.group(3)
            answer = f"{month:02}/{day:02}/{year}"
        else:
            answer = "N/A"
    elif calid in [69]:
        match = re.search(
            r"\(?[\"\']?(\d+)\s*(weeks?)?[\"\']?,?\s*[\"\']?(\d+)\s*(days?)?[\"\']?\s*\)?",
            extracted_answer,
        )
        ground_truth = f"({match.group(1)}, {match.group(3)})"  # noqa: F841
        extracted_answer = (
            extracted_answer.replace("[", "(").replace("]", ")").replace("'", "").replace('"', "")
        )
        match = re.search(
            r"\(?[\"\']?(\d+)\s*(weeks?)?[\"\']?,?\s*[\"\']?(\d+)\s*(days?)?[\"\']?\s*\)?",
            extracted_answer,
        )
        if match:
            weeks = match.group(1)
            days = match.group(3)
            answer = f"({weeks}, {days})"
        else:
            answer = "N/A"
    elif calid in [4, 15, 16, 17, 18, 20, 21, 25, 27, 28, 29, 32, 33, 36, 43, 45, 48, 51, 69]:
        match = re.search(r"(\d+) out of", extracted_answer)
        if match:
            answer = match.group(1)
        else:
            match = re.search(r"-?\d+(, ?-?\d+)+", extracted_answer)
            if match:
                answer = str(len(match.group(0).split(",")))
            else:
                match = re.findall(r"(-?\d+(\.\d+)?)", extracted_answer)
                answer = match[-1][0] if len(match) > 0 else "N/A"
    elif calid in [
        2,
        3,
        5,
        6,
        7,
        8,
        9,
        10,
        11,
        19,
        22,
        23,
        24,
        26,
        30,
        31,
        38,
        39,
        40,
        44,
        46,
        49,
        56,
        57,
        58,
        59,
        60,
        61,
        62,
        63,
        64,
        65,
        66,
        67,
    ]:
        match = re.search(r"str\((.*)\)", extracted_answer)
        if match:
            expression = (
                match.group(1)
                .replace("^", "**")
                .replace("is odd", "% 2 == 1")
                .replace("is even", "% 2 == 0")
                .replace("sqrt", "math.sqrt")
                .replace(".math", "")
                .replace("weight", "")
                .replace("height", "")
                .replace("mg/dl", "")
                .replace("g/dl", "")
                .replace("mmol/L", "")
                .replace("kg", "")
                .replace("g", "")
                .replace("mEq/L", "")
            )
            expression = expression.split("#")[0]
            if expression.count("(") > expression.count(")"):
                expression += ")" * (expression.count("(") - expression.count(")"))
            elif expression.count(")") > expression.count("("):
                expression = "(" * (expression.count(")") - expression.count("(")) + expression
            try:
                answer = eval(
                    expression,
                    {"__builtins__": None},
                    {
                        "min": min,
                        "pow": pow,
                        "round": round,
                        "abs": abs,
                        "int": int,
                        "float": float,
                        "math": math,
                        "np": np,
                        "numpy": np,
                    },
                )
            except:  # noqa: E722
                answer = "N/A"
        else:
            match = re.search(r"(-?\d+(\.\d+)?)\s*mL/min/1.73", extracted_answer)
            if match:
                answer = eval(match.group(1))
            else:
                match = re.findall(r"(-?\d+(\.\d+)?)\%", extracted_answer)
                if len(match) > 0:
                    answer = eval(match[-1][0]) / 100
                else:
                    match = re.findall(r"(-?\d+(\.\d+)?)", extracted_answer)
                    answer = eval(match[-1][0]) if len(match) > 0 else "N/A"
        if answer != "N/A":
            answer = str(answer)
    return answer, explanation


def their_check_correctness(answer: str, ground_truth, calid, upper_limit, lower_limit):  # type: ignore[no-untyped-def]
    calid = int(calid)
    if calid in [13, 68]:
        if datetime.strptime(answer, "%m/%d/%Y").strftime("%-m/%-d/%Y") == datetime.strptime(
            ground_truth, "%m/%d/%Y"
        ).strftime("%-m/%-d/%Y"):
            correctness = 1
        else:
            correctness = 0
    elif calid in [69]:
        match = re.search(
            r"\(?[\"\']?(\d+)\s*(weeks?)?[\"\']?,?\s*[\"\']?(\d+)\s*(days?)?[\"\']?\s*\)?",
            ground_truth,
        )
        ground_truth = f"({match.group(1)}, {match.group(3)})"
        match = re.search(
            r"\(?[\"\']?(\d+)\s*(weeks?)?[\"\']?,?\s*[\"\']?(\d+)\s*(days?)?[\"\']?\s*\)?", answer
        )
        if match:
            weeks = match.group(1)
            days = match.group(3)
            answer = f"({weeks}, {days})"
            correctness = 1 if eval(answer) == eval(ground_truth) else 0
        else:
            correctness = 0
    elif calid in [4, 15, 16, 17, 18, 20, 21, 25, 27, 28, 29, 32, 33, 36, 43, 45, 48, 51, 69]:
        answer = round(eval(answer))
        correctness = 1 if answer == eval(ground_truth) else 0
    elif calid in [
        2,
        3,
        5,
        6,
        7,
        8,
        9,
        10,
        11,
        19,
        22,
        23,
        24,
        26,
        30,
        31,
        38,
        39,
        40,
        44,
        46,
        49,
        56,
        57,
        58,
        59,
        60,
        61,
        62,
        63,
        64,
        65,
        66,
        67,
    ]:
        answer = eval(answer)
        correctness = 1 if answer >= eval(lower_limit) and answer <= eval(upper_limit) else 0
    else:
        raise ValueError(f"Unknown calculator ID: {calid}")
    return correctness


def their_result(reply: str, row: dict[str, str]) -> int:
    """run.py's loop: any exception while reading or checking makes the answer Incorrect."""
    try:
        value, _ = their_extract_answer(reply, int(row["Calculator ID"]))
        return their_check_correctness(
            value, row["Ground Truth Answer"], row["Calculator ID"], row["Upper Limit"],
            row["Lower Limit"],
        )  # fmt: skip
    except Exception:
        return 0


# ---- end of their code


def replies(row: dict[str, str]) -> list[str]:
    """Answers a model might give this row: right, near, wrong, in prose, malformed."""
    truth = row["Ground Truth Answer"]
    if row["Calculator ID"] in ("13", "68"):
        month, day, year = truth.split("/")
        shown = [truth, f"{int(month)}/{int(day)}/{year}", f"{month}/{day}/{int(year) + 1}"]
    elif row["Calculator ID"] == "69":
        weeks, days = re.findall(r"\d+", truth)
        shown = [
            f"({weeks} weeks, {days} days)", f"('{weeks} weeks', '{days} days')",
            f"[{weeks}, {days}]", f"({weeks} weeks, {int(days) + 1} days)", "about four months",
        ]  # fmt: skip
    else:
        value = float(truth)
        shown = [
            truth, f"{value * 1.04:.3f}", f"{value * 1.2:.3f} mEq/L", f"{value:.1f} mm Hg",
            f"The score is {truth}", f"{round(value)} out of 6", "1, 2, 3", f"{value}%", "none",
            f"str(round({value}, 1))", f"str(({value} * 3 - 1) / 3)", f"str(min({value}, 2))",
            f"str(math.sqrt({value}**2)) mg/dl", f"str(abs(-{value}) # the value",
            f"str(pow({value}, 1)))", "str(unknown(3))",
        ]  # fmt: skip
    forms = [
        '{{"step_by_step_thinking": "Add the points.", "answer": "{}"}}',
        '{{"step_by_step_thinking": "x", "answer": {}}}',
        'Thinking... {{"answer": "{}"}} and later {{"answer": "0"}}',
        "The answer is {}.",  # no JSON: nothing to read
        '{{"step_by_step_thinking": "unterminated, "answer": "{}"',  # no closing brace
        '{{"step_by_step_thinking": "{{think}}", "answer": "str(short_and_direct_answer_of_the_question)"}}',  # noqa: E501
    ]
    return [form.format(value) for form in forms for value in shown]


def fixture_sample(row: dict[str, str]) -> Any:
    return next(s for s in load(FIXTURE).samples if s.doc_id == row["Row Number"])


@pytest.mark.parametrize("row", ROWS, ids=lambda row: f"row{row['Row Number']}")
def test_scoring_agrees_with_the_papers_evaluation_code(row: dict[str, str]) -> None:
    sample = fixture_sample(row)
    outcomes = []
    for reply in replies(row):
        ours = score_answer(sample, reply)
        assert ours.metrics["acc"] == their_result(reply, row), reply
        outcomes.append(ours.metrics["acc"])
    assert 0 < sum(outcomes) < len(outcomes)  # the table holds right and wrong answers


@pytest.mark.parametrize(
    ("reply", "kind", "expected"),
    [
        ('{"step_by_step_thinking": "140-104-24", "answer": "12"}', "decimal", "12.0"),
        ('{"step_by_step_thinking": "s", "answer": 22.9 kg/m^2}', "decimal", "2.0"),  # last number
        ('{"answer": "eGFR 58.2 mL/min/1.73 m²"}', "decimal", "58.2"),
        ('{"answer": "53.1%"}', "decimal", "0.531"),
        ('{"answer": "3 out of 5 criteria"}', "integer", "3"),
        ('{"answer": "criteria 1, 2, 4 are met"}', "integer", "3"),  # a list: its length
        ('{"answer": "-2"}', "integer", "-2"),
        ('{"answer": "9/8/2024"}', "date", "09/08/2024"),
        ('{"answer": "2024-09-08"}', "date", None),
        ('{"answer": "(16 weeks, 1 day)"}', "weeks_days", "(16, 1)"),
        ('{"answer": ["16 weeks", "1 days"]}', "weeks_days", "(16, 1)"),
        ('{"answer": "X.XX"}', "decimal", None),  # the prompt's placeholder
        ("The MAP is 93 mm Hg.", "decimal", None),  # prose, no JSON
        ('{"step_by_step_thinking": "no answer key"}', "decimal", None),
        ('<think>{"answer": "1"}</think>{"answer": "7"}', "integer", "7"),
    ],
)
def test_what_is_read_from_a_reply(reply: str, kind: Any, expected: str | None) -> None:
    from medharness.tasks.answers import split_reasoning

    stated = stated_answer(split_reasoning(reply).reply)
    assert (None if stated is None else parse_answer(stated, kind)) == expected


def test_the_fixture_ground_truths_are_what_the_calculators_give() -> None:
    medcalc = pytest.importorskip("medcalc")  # medcalc-bench on PyPI: the paper's calculators
    from medcalc import (
        anion_gap,
        bmi_calculator,
        conception_date,
        curb_65,
        estimated_due_date,
        gestational_age,
        mean_arterial_pressure,
    )  # fmt: skip

    calculators: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
        "5": mean_arterial_pressure.mean_arterial_pressure_explanation,
        "6": bmi_calculator.bmi_calculator_explanation,
        "39": anion_gap.compute_anion_gap_explanation,
        "45": curb_65.curb_65_explanation,
        "13": estimated_due_date.add_40_weeks_explanation,
        "68": conception_date.add_2_weeks_explanation,
        "69": gestational_age.compute_gestational_age_explanation,
    }
    assert medcalc is not None
    assert {row["Output Type"] for row in ROWS} == {"decimal", "integer", "date"}
    for row in ROWS:
        answer = calculators[row["Calculator ID"]](json.loads(row["Relevant Entities"]))["Answer"]
        assert str(answer) == row["Ground Truth Answer"], row["Row Number"]
        if row["Output Type"] == "decimal":  # the README's limits: 95% and 105% of the answer
            assert float(row["Lower Limit"]) == pytest.approx(answer * 0.95)
            assert float(row["Upper Limit"]) == pytest.approx(answer * 1.05)


def bad_copy(tmp_path: Path, edit: Callable[[list[dict[str, str]]], list[dict[str, str]]]) -> Path:
    rows = edit([dict(row) for row in ROWS])
    folder = tmp_path / "medcalc_bench"
    folder.mkdir(parents=True)
    with (folder / "test_data.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder


def _set(
    index: int, column: str, value: str
) -> Callable[[list[dict[str, str]]], list[dict[str, str]]]:
    def edit(rows: list[dict[str, str]]) -> list[dict[str, str]]:
        rows[index][column] = value
        return rows

    return edit


def _drop(column: str) -> Callable[[list[dict[str, str]]], list[dict[str, str]]]:
    return lambda rows: [{k: v for k, v in row.items() if k != column} for row in rows]


# id (as in docs/errors.md) -> (the edit, what the one line says)
MEDCALC_CASES: dict[str, tuple[Callable[[list[dict[str, str]]], list[dict[str, str]]], str]] = {
    "medcalc-limit-not-a-number": (
        _set(2, "Upper Limit", "about 80"),
        "test_data.csv: row 4: Upper Limit: 'about 80' is not a number",
    ),
    "medcalc-unknown-output-type": (
        _set(5, "Output Type", "fraction"),
        "test_data.csv: row 7: Output Type: 'fraction' is none of decimal, integer, date",
    ),
    "medcalc-unknown-calculator": (
        _set(0, "Calculator ID", "99"),
        "test_data.csv: row 2: Calculator ID: no MedCalc-Bench calculator '99'",
    ),
    "medcalc-missing-column": (
        _drop("Lower Limit"),
        "test_data.csv: missing column(s) 'Lower Limit'",
    ),
}


@pytest.mark.parametrize("case", sorted(MEDCALC_CASES))
def test_a_bad_row_is_one_line_naming_file_row_and_field(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit, expected = MEDCALC_CASES[case]
    bad_copy(tmp_path / "data", edit)
    config = run_config(tmp_path, tmp_path / "data", fake_answers(tmp_path))
    capsys.readouterr()
    assert main(["run", str(config), "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err, err
    assert not (tmp_path / "runs" / "calc").exists()


def test_a_limit_of_a_numeric_row_must_be_a_number_even_when_blank(tmp_path: Path) -> None:
    folder = bad_copy(tmp_path, _set(0, "Lower Limit", ""))
    with pytest.raises(UserError, match=r"row 2: Lower Limit: '' is not a number"):
        load(folder)


def fake_answers(tmp_path: Path) -> Path:
    """A model that answers the first MAP row right, the first BMI row wrong, the first
    due-date row right, and everything else without JSON."""
    script = {
        "generate": [
            {
                "match": "Blood pressure is 120/80",
                "output": '{"step_by_step_thinking": "(120 + 2*80)/3", "answer": "93.3"}',
            },
            {
                "match": "weighs 70 kg",
                "output": '{"step_by_step_thinking": "70/1.75^2", "answer": "25.1"}',
            },
            {
                "match": "was on 12/03/2023",
                "output": '{"step_by_step_thinking": "+280 days", "answer": "09/08/2024"}',
            },
        ],
        "default_output": "I cannot compute this.",
    }
    path = tmp_path / "fake.yaml"
    path.write_text(yaml.safe_dump(script), encoding="utf-8")
    return path


def run_config(tmp_path: Path, data: Path, fake: Path, **extra: Any) -> Path:
    config = {
        "name": "calc",
        "data_dir": str(data),
        "models": [
            {"name": "base", "model": f"fake:{fake}"},
            {"name": "other", "model": f"fake:{fake}"},
        ],
        "tasks": ["medcalc"],
        "bootstrap_resamples": 200,
        **extra,
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def test_a_run_scores_reads_and_breaks_down_medcalc(tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(FIXTURE, data / "medcalc_bench")
    config = run_config(tmp_path, data, fake_answers(tmp_path))
    assert main(["run", str(config), "--out", str(tmp_path / "runs")]) == 0
    run = tmp_path / "runs" / "calc"
    result = json.loads((run / "results.json").read_text())["results"]["base"]["medcalc"]
    assert result["n"] == 28
    assert result["metrics"]["acc"]["value"] == pytest.approx(2 / 28)
    assert result["metrics"]["invalid_answer"]["value"] == pytest.approx(25 / 28)
    # scipy's Clopper-Pearson interval, computed independently
    from scipy.stats import binomtest

    low, high = binomtest(2, 28).proportion_ci(method="exact")
    assert result["metrics"]["acc"]["ci95"] == pytest.approx([low, high])
    by_category = result["breakdowns"]["category"]
    assert set(by_category) == {"date", "lab test", "physical", "risk"}
    assert by_category["physical"]["acc"]["value"] == pytest.approx(1 / 8)
    assert by_category["date"]["acc"]["value"] == pytest.approx(1 / 12)
    assert (
        result["breakdowns"]["calculator"]["Mean Arterial Pressure (MAP)"]["acc"]["value"] == 0.25
    )
    assert "check_correctness" in result["settings"]["answer_scoring"]["source"]
    rows = [json.loads(line) for line in (run / "samples" / "base" / "medcalc.jsonl").open()]
    read = {row["doc_id"]: row["extracted"] for row in rows}
    assert read["1"] == "93.3" and read["5"] == "25.1" and read["17"] == "09/08/2024"
    assert read["2"] == ""
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["config"]["generation"]["cot_max_new_tokens"] == 2048
    assert main(["report", str(run), "-o", str(tmp_path / "report.html")]) == 0
    report = (tmp_path / "report.html").read_text()
    assert "medcalc" in report and "lab test" in report
    assert main(["leaderboard", str(run), "-o", str(tmp_path / "lb.md")]) == 0
    assert "medcalc" in (tmp_path / "lb.md").read_text()


def test_the_viewer_shows_what_was_read_and_the_gate_judges_accuracy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from medharness.reports.viewer import Viewer, render

    data = tmp_path / "data"
    shutil.copytree(FIXTURE, data / "medcalc_bench")
    config = run_config(tmp_path, data, fake_answers(tmp_path))
    assert main(["run", str(config), "--out", str(tmp_path / "runs")]) == 0
    run = tmp_path / "runs" / "calc"
    viewer = Viewer.open([run])
    assert [s.doc_id for s in viewer.select("medcalc", outcome="base right")] == ["1", "17"]
    assert "category=lab test" in viewer.groups("medcalc")
    html = render(viewer.select("medcalc", doc_id="5"))
    assert "<b>Extracted:</b> 25.1 · wrong" in html
    assert "lower_limit: 21.71415" in html and "upper_limit: 23.99985" in html
    assert "<b>Extracted:</b> no answer · wrong" in render(viewer.select("medcalc", doc_id="2"))
    policy = tmp_path / "gate.yaml"
    policy.write_text(
        yaml.safe_dump(
            {"tasks": {"medcalc": {"tier": "critical", "metrics": {"acc": {"floor": 0.5}}}}}
        ),
        encoding="utf-8",
    )
    capsys.readouterr()
    assert main(["gate", str(run), "--policy", str(policy)]) == 1  # 2/28 is below the floor
    assert "FAIL" in capsys.readouterr().out
    from medharness.reports.cards import Claim, judge_claim
    from medharness.reports.runs import RunData

    claim = Claim(
        id="calc", kind="value", text="7% on MedCalc-Bench", model="base", task="medcalc",
        metric="acc", value=0.07, tolerance=0.01,
    )  # fmt: skip
    assert judge_claim(claim, RunData.open(run)).status == "reproduced"


def test_the_task_is_registered_with_its_rules() -> None:
    assert MEDCALC.metric_names == ("acc", "invalid_answer")
    assert MEDCALC.reasoned and MEDCALC.answer_scoring is not None
    samples = load(FIXTURE).samples
    assert samples[0].prompt.startswith("You are a helpful assistant for calculating a score")
    assert samples[0].prompt.endswith('"answer": str(short_and_direct_answer_of_the_question)}:')


@pytest.mark.slow
@pytest.mark.heavy
def test_the_built_in_model_answers_a_few_rows(tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(FIXTURE, data / "medcalc_bench")
    config = {
        "name": "calc",
        "data_dir": str(data),
        "models": [{"name": "smol", "model": "smollm2-135m-instruct"}],
        "tasks": [{"name": "medcalc", "limit": 2}],
        "generation": {"cot_max_new_tokens": 48},
        "bootstrap_resamples": 200,
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    assert main(["run", str(path), "--out", str(tmp_path / "runs")]) == 0
    result = json.loads((tmp_path / "runs" / "calc" / "results.json").read_text())
    scored = result["results"]["smol"]["medcalc"]
    assert scored["n"] == 2 and 0 <= scored["metrics"]["acc"]["value"] <= 1
    rows = (tmp_path / "runs" / "calc" / "samples" / "smol" / "medcalc.jsonl").read_text()
    assert all("extracted" in json.loads(line) for line in rows.splitlines())


def test_the_hub_copy_gives_the_same_samples_as_the_csv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ncbi/MedCalc-Bench-v1.0's layout: a parquet file per split under data/, the ids typed
    as integers."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from medharness.tasks.hub_sources import with_source

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))
    typed = [
        {**row, "Row Number": int(row["Row Number"]), "Calculator ID": int(row["Calculator ID"])}
        for row in ROWS
    ]
    (tmp_path / "hub" / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(typed), tmp_path / "hub/data/test-00000-of-00001.parquet")
    task = with_source(MEDCALC, str(tmp_path / "hub"), tmp_path)
    assert task.load(tmp_path).samples == load(FIXTURE).samples


@pytest.mark.parametrize(
    "expression",
    [
        "(120 + 2*80)/3", "round(93.333, 1)", "140 - (104 + 24)", "2^3", "sqrt(16) + 1",
        "np.sqrt(2)", "math.log(10)", "int(7.9) % 3", "-(-4) // 3", "min(3, 1.5)",
        "float(2) * weight", "abs(-2.5)kg", "10 / 0", "max(1, 2)", "print(1)",
        "().__class__", "'a' * 3", "2 ** 0.5",
    ],
)  # fmt: skip
def test_an_answer_written_as_an_expression_is_computed_as_their_eval_would(
    expression: str,
) -> None:
    from medharness.tasks.medcalc import _their_rewrite, evaluate

    try:
        theirs = float(their_extract_answer(f'{{"answer": "str({expression})"}}', 5)[0])
    except ValueError:  # their "N/A"
        theirs = None
    ours = evaluate(_their_rewrite(expression))
    assert ours == (None if theirs is None else pytest.approx(theirs))


@pytest.mark.parametrize(
    "expression", ["9**9**9", "__import__('os').system('true')", "(1e308*10)", "[0]*10**9"]
)
def test_an_expression_is_parsed_never_run_and_stays_bounded(expression: str) -> None:
    from medharness.tasks.medcalc import evaluate

    assert evaluate(expression) is None


def test_the_lm_eval_task_reads_the_same_rows_and_scores_alike() -> None:
    from medharness.tasks import lm_eval_glue

    docs = lm_eval_glue.medcalc(data_dir=str(FIXTURE.parent))["test"].to_list()
    samples = load(FIXTURE).samples
    assert [doc["prompt"] for doc in docs] == [sample.prompt for sample in samples]
    for doc, sample, row in zip(docs, samples, ROWS, strict=True):
        for reply in replies(row)[:12]:
            expected = score_answer(sample, reply).metrics
            assert lm_eval_glue.medcalc_process_results(doc, [reply]) == expected
