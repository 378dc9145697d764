"""Users' own test sets declared in the config: JSONL, CSV and Parquet, generation and
multiple choice, through run, report and gate; every bad file one line naming file, row and
column."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from medharness.cli import main
from medharness.config import TaskEntry
from medharness.tasks.medquad import split_of

QA = [
    {"qid": f"q{i}", "question": f"What is condition {i}?", "answer": f"Condition {i} is rare.",
     "area": "eyes" if i % 2 else "skin"}
    for i in range(30)
]  # fmt: skip
MC = [
    {"qid": f"m{i}", "question": f"Which drug treats {i}?", "a": f"alpha {i}", "b": f"beta {i}",
     "c": f"gamma {i}", "d": f"delta {i}", "gold": "ABCD"[i % 4]}
    for i in range(30)
]  # fmt: skip


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def generation_task(path: Path, **extra: Any) -> dict[str, Any]:
    columns = {"id": "qid", "answer": "answer", "group_by": ["area"]}
    return {"kind": "generation", "path": str(path), "columns": columns, **extra}


def choice_task(path: Path) -> dict[str, Any]:
    columns = {"id": "qid", "options": ["a", "b", "c", "d"], "gold": "gold"}
    return {"kind": "multiple_choice", "path": str(path), "columns": columns}


def config_file(tmp_path: Path, tasks: list[dict[str, Any]], models: list[str]) -> Path:
    config = {
        "name": "own",
        "output_dir": str(tmp_path / "runs"),
        "bootstrap_resamples": 200,
        "models": [{"name": f"m{i}", "model": f"fake:{m}"} for i, m in enumerate(models)],
        "tasks": tasks,
    }
    path = tmp_path / "own.yaml"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def fake(tmp_path: Path, name: str, script: dict[str, Any]) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps(script), encoding="utf-8")
    return str(path)


def test_own_generation_and_choice_tasks_run_report_and_gate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    qa, mc = write_jsonl(tmp_path / "qa.jsonl", QA), write_jsonl(tmp_path / "mc.jsonl", MC)
    knows = fake(tmp_path, "knows", {
        "generate": [{"match": f"condition {i}?", "output": f"Condition {i} is rare."}
                     for i in range(30)],
        "choose": [{"match": f"treats {i}?", "answer": "ABCD"[i % 4]} for i in range(30)],
    })  # fmt: skip
    guesses = fake(tmp_path, "guesses", {"default_output": "No idea.", "seed": 3})
    tasks = [
        {"name": "heldout_qa", "custom": generation_task(qa)},
        {"name": "heldout_mc", "custom": choice_task(mc)},
    ]
    config = config_file(tmp_path, tasks, [guesses, knows])
    assert main(["run", str(config)]) == 0
    run_dir = tmp_path / "runs" / "own"
    results = json.loads((run_dir / "results.json").read_text())["results"]
    assert results["m1"]["heldout_mc"]["metrics"]["acc"]["value"] == 1.0
    assert results["m1"]["heldout_qa"]["metrics"]["rouge1"]["value"] == 1.0
    assert results["m0"]["heldout_qa"]["n"] == 30 and results["m0"]["heldout_mc"]["n"] == 30
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["tasks"]["heldout_mc"]["version"] == "custom-1"
    assert (
        manifest["data"]["sha256"]["qa.jsonl"]
        == manifest["tasks"]["heldout_qa"]["data_sha256"]["qa.jsonl"]
    )
    inputs = (run_dir / "inputs/heldout_mc.jsonl").read_text().splitlines()
    assert json.loads(inputs[0])["prompt"] == (
        "Question: Which drug treats 0?\nA. alpha 0\nB. beta 0\nC. gamma 0\nD. delta 0\nAnswer:"
    )

    # exported in lm-eval's layout and read back: the same values, intervals and tests
    assert main(["export", str(run_dir), "-o", str(tmp_path / "lm-eval")]) == 0
    blocks = [tmp_path / "own.md", tmp_path / "exported.md"]
    for source, block in zip([run_dir, tmp_path / "lm-eval"], blocks, strict=True):
        assert main(["report", str(source), "-o", str(block)]) == 0
    own, exported = (block.read_text().splitlines()[1:] for block in blocks)
    assert own == exported and any(line.startswith("| m1 |") for line in own)

    report = tmp_path / "report.html"
    assert main(["report", str(run_dir), "-o", str(report)]) == 0  # recomputes every metric
    assert "heldout_qa" in report.read_text() and "rouge1 by area" in report.read_text()
    policy = tmp_path / "policy.yaml"
    policy.write_text(json.dumps({"min_samples": 30, "floors": {"heldout_mc.acc": 0.9},
                                  "regressions": {"heldout_qa.rougeL": 1}}))  # fmt: skip
    assert main(["gate", str(run_dir), "--policy", str(policy)]) == 0
    policy.write_text(json.dumps({"candidate": "m0", "floors": {"heldout_mc.acc": 0.9},
                                  "min_samples": 30}))  # fmt: skip
    assert main(["gate", str(run_dir), "--policy", str(policy)]) == 1
    capsys.readouterr()
    policy.write_text(json.dumps({"floors": {"heldout_xx.acc": 0.9}}))
    assert main(["gate", str(run_dir), "--policy", str(policy)]) == 2
    assert "unknown task 'heldout_xx'" in capsys.readouterr().err


def test_csv_and_parquet_give_the_samples_jsonl_gives(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    jsonl = write_jsonl(tmp_path / "mc.jsonl", MC)
    with (tmp_path / "mc.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(MC[0]))
        writer.writeheader()
        writer.writerows(MC)
    pq.write_table(pa.Table.from_pylist(MC), tmp_path / "mc.parquet")
    loaded = []
    for name in ("mc.jsonl", "mc.csv", "mc.parquet"):
        entry = TaskEntry.model_validate({"name": "mine", "custom": choice_task(tmp_path / name)})
        task = entry.task(tmp_path)
        loaded.append(task.load(tmp_path).samples)
    assert loaded[0] == loaded[1] == loaded[2] and len(loaded[0]) == 30
    assert jsonl.is_file()


def test_a_split_keeps_the_questions_medquad_would_put_there(tmp_path: Path) -> None:
    qa = write_jsonl(tmp_path / "qa.jsonl", QA)
    entry = TaskEntry.model_validate({"name": "mine", "custom": generation_task(qa, split="test")})
    kept = [s.metadata["question"] for s in entry.task(tmp_path).load(tmp_path).samples]
    assert kept == [row["question"] for row in QA if split_of(row["question"]) == "test"]
    assert 0 < len(kept) < 30


def bad_file(tmp_path: Path, rows: list[dict[str, Any]] | bytes, kind: str = "mc") -> list[str]:
    path = tmp_path / "bad.jsonl"
    if isinstance(rows, bytes):
        path.write_bytes(rows)
    else:
        write_jsonl(path, rows)
    task = choice_task(path) if kind == "mc" else generation_task(path)
    guess = fake(tmp_path, "guess", {"default_output": "x"})
    return ["run", str(config_file(tmp_path, [{"name": "mine", "custom": task}], [guess]))]


CUSTOM_CASES = {
    "custom-missing-column": (
        lambda tmp: bad_file(tmp, [{k: v for k, v in row.items() if k != "c"} for row in MC]),
        "bad.jsonl:1: column 'c' not found",
    ),
    "custom-empty-answer": (
        lambda tmp: bad_file(tmp, [*QA[:4], {**QA[4], "answer": " "}], kind="qa"),
        "bad.jsonl:5: answer: must be non-empty text",
    ),
    "custom-gold-not-an-option": (
        lambda tmp: bad_file(tmp, [*MC[:2], {**MC[2], "gold": "E"}]),
        "bad.jsonl:3: gold: 'E' is not one of the option letters A, B, C, D",
    ),
    "custom-duplicate-id": (
        lambda tmp: bad_file(tmp, [*MC[:5], {**MC[5], "qid": "m1"}]),
        "bad.jsonl:6: qid: 'm1' repeats line 2",
    ),
    "custom-not-utf8": (
        lambda tmp: bad_file(tmp, json.dumps(MC[0]).encode() + b'\n{"qid": "m\xff1"}\n'),
        "bad.jsonl:2: not UTF-8 text",
    ),
}


@pytest.mark.parametrize("case", sorted(CUSTOM_CASES))
def test_a_bad_file_is_one_line_naming_file_row_and_column(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_args, expected = CUSTOM_CASES[case]
    args = make_args(tmp_path)
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err, err


def test_an_own_task_from_a_hub_dataset_layout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    (tmp_path / "hub-copy" / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(MC), tmp_path / "hub-copy/data/test-00000-of-00001.parquet")
    spec = {**choice_task(tmp_path / "hub-copy"), "path": "hub-copy"}
    task = TaskEntry.model_validate({"name": "mine", "custom": spec}).task(tmp_path)
    assert task.source == "local:hub-copy"
    loaded = task.load(tmp_path)
    from_jsonl = TaskEntry.model_validate(
        {"name": "mine", "custom": choice_task(write_jsonl(tmp_path / "mc.jsonl", MC))}
    ).task(tmp_path)
    assert loaded.samples == from_jsonl.load(tmp_path).samples
    assert list(loaded.file_hashes) == ["local:hub-copy"]


def test_an_own_choice_task_scored_from_written_answers(tmp_path: Path) -> None:
    """A chat model on the user's own multiple-choice file: options parsed from its answers,
    answers naming none counted as invalid."""
    mc = write_jsonl(tmp_path / "mc.jsonl", MC)
    chat = fake(tmp_path, "chat", {
        "generate": [{"match": f"treats {i}?", "output": f"The answer is {'ABCD'[i % 4]}."}
                     for i in range(25)],
        "default_output": "It depends on the patient.",
    })  # fmt: skip
    config = config_file(tmp_path, [{"name": "heldout_mc", "custom": choice_task(mc)}], [chat])
    settings = json.loads(config.read_text())
    settings["models"][0]["multiple_choice"] = "generate"
    config.write_text(json.dumps(settings), encoding="utf-8")
    assert main(["run", str(config)]) == 0
    run_dir = tmp_path / "runs" / "own"
    metrics = json.loads((run_dir / "results.json").read_text())["results"]["m0"]["heldout_mc"]
    assert metrics["metrics"]["acc"]["value"] == 25 / 30
    assert metrics["metrics"]["invalid_answer"]["value"] == 5 / 30
    rows = [json.loads(line) for line in (run_dir / "samples/m0/heldout_mc.jsonl").open()]
    assert [row["prediction"] for row in rows[:4]] == ["A", "B", "C", "D"]
    assert {row["answer"] for row in rows[25:]} == {"It depends on the patient."}
    assert {row["chosen"] for row in rows[25:]} == {-1}


def csv_task(tmp_path: Path, cell: str) -> list[str]:
    path = tmp_path / "own.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["qid", "question", "answer", "area"])
        writer.writeheader()
        writer.writerows([*QA[:3], {**QA[3], "answer": cell}])
    task = generation_task(path)
    guess = fake(tmp_path, "guess", {"default_output": "x"})
    return ["run", str(config_file(tmp_path, [{"name": "mine", "custom": task}], [guess]))]


def test_a_one_mib_csv_cell_is_read(tmp_path: Path) -> None:
    assert main(csv_task(tmp_path, "long answer " * 90_000)) == 0  # past csv's 128 KiB default


def test_a_csv_cell_past_the_limit_is_one_line_naming_its_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(csv_task(tmp_path, "x" * (17 << 20))) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "own.csv:5: not readable as CSV (field larger than" in err


def test_bytes_in_a_parquet_group_column_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rows = [{**row, "area": row["area"].encode()} for row in QA]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "own.parquet")
    task = generation_task(tmp_path / "own.parquet")
    guess = fake(tmp_path, "guess", {"default_output": "x"})
    capsys.readouterr()
    assert (
        main(["run", str(config_file(tmp_path, [{"name": "mine", "custom": task}], [guess]))]) == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "own.parquet:row 1: area: a group_by column holds text" in err
