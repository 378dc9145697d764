"""Typed run records: schemas in docs/ follow the code, old runs still load, and a
hand-edited file is one clear error naming the file and the field."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from medharness.cli import main
from medharness.core.io import write_record
from medharness.core.records import SAMPLE_ROWS, Manifest, json_schemas
from medharness.core.rundir import RunDir
from medharness.reports.runs import RunData
from medharness.tasks import get_task
from medharness.tasks.metrics import aggregate

ROOT = Path(__file__).resolve().parent.parent
OLD_RUN = ROOT / "tests" / "fixtures" / "run-0.1"  # written by medharness 0.1, before records


def test_committed_json_schemas_equal_the_code() -> None:
    """Regenerate with: python -m medharness.core.records docs/schemas"""
    committed = {path.name: path.read_text() for path in (ROOT / "docs/schemas").glob("*.json")}
    assert committed == json_schemas()


def test_a_run_written_before_records_loads_with_the_same_numbers() -> None:
    run = RunData.open(OLD_RUN)
    raw = json.loads((OLD_RUN / "results.json").read_text())
    assert run.results.model_dump(mode="json") == raw
    for model in run.models:
        for task in run.results.results[model]:
            rows = run.samples(model, task)
            recomputed = aggregate(get_task(task), rows, resamples=1000, seed=1234)
            assert recomputed.model_dump(mode="json") == raw["results"][model][task]
    lines = (OLD_RUN / "samples/base/medqa_4opt.jsonl").read_text().splitlines()
    rows = SAMPLE_ROWS.validate_python([json.loads(line) for line in lines])
    assert [row.model_dump(mode="json") for row in rows] == [json.loads(x) for x in lines]


def test_a_manifest_read_and_written_again_is_the_same_text(tmp_path: Path) -> None:
    """Each model's record keeps its backend's keys in the backend's order, with the keys a
    run adds (processes, trained weights) where they were, so a run that reuses an earlier
    run's records writes them unchanged."""
    old = Manifest.model_validate_json((OLD_RUN / "manifest.json").read_bytes())
    raw = old.model_dump(mode="json")  # with the fields added since, at their defaults
    raw["models"]["tuned"] = {
        "kind": "hf",
        "source": "base-model",
        "adapter": "train/tuned/adapter",
        "weights_sha256": {"model.safetensors": "ab"},
        "processes": 2,
        "model": "train/tuned/model",
        "trained": {"key": "k1", "best": {"step": 4}},
    }
    source = tmp_path / "written.json"
    source.write_text(json.dumps(raw, indent=2, ensure_ascii=False) + "\n")
    manifest = Manifest.model_validate_json(source.read_bytes())
    assert manifest.models["tuned"].processes == 2
    assert manifest.models["tuned"].trained == {"key": "k1", "best": {"step": 4}}
    write_record(tmp_path / "again.json", manifest)
    assert (tmp_path / "again.json").read_text() == source.read_text()


def test_the_run_layout_names_every_file_of_a_run_written_before_it() -> None:
    """RunDir, the one spelling of a run's paths, finds each file a run of 0.1 wrote (long
    before it existed) and names no file that run lacks."""
    layout = RunDir(OLD_RUN)
    results = json.loads((OLD_RUN / "results.json").read_text())["results"]
    named = {
        layout.results,
        layout.manifest,
        *(layout.input_log(task) for tasks in results.values() for task in tasks),
        *(layout.sample_log(model, task) for model, tasks in results.items() for task in tasks),
    }
    assert named == {path for path in OLD_RUN.rglob("*") if path.is_file()}
    assert layout.name == RunDir.staging_for(OLD_RUN).name == "run-0.1"


def test_a_run_written_before_records_renders_and_gates(tmp_path: Path) -> None:
    policy = tmp_path / "gate.yaml"
    policy.write_text("min_samples: 8\nfloors: {medqa_4opt.acc: 0.0}\n")
    assert main(["report", str(OLD_RUN), "-o", str(tmp_path / "r.html")]) == 0
    assert main(["leaderboard", str(OLD_RUN), "-o", str(tmp_path / "l.html")]) == 0
    assert main(["gate", str(OLD_RUN), "--policy", str(policy)]) == 0


def edited_run(tmp_path: Path, name: str, edit: object) -> Path:
    run = tmp_path / "run"
    shutil.copytree(OLD_RUN, run)
    data = json.loads((run / name).read_text())
    edit(data)  # type: ignore[operator]
    (run / name).write_text(json.dumps(data))
    return run


def set_n_to_text(data: dict) -> None:
    data["results"]["base"]["medquad_gen"]["n"] = "eight"


def drop_baseline(data: dict) -> None:
    del data["baseline"]


def drop_task_prompt(data: dict) -> None:
    del data["tasks"]["medqa_4opt"]["prompt"]


def old_schema(data: dict) -> None:
    data["schema_version"] = 0


EDITED_FILES = {  # the ids of docs/errors.md's rows
    "run-file-wrong-type": (
        "results.json",
        set_n_to_text,
        "results.json: results.base.medquad_gen.n: ",
    ),
    "run-file-missing-field": (
        "results.json",
        drop_baseline,
        "results.json: baseline: Field required",
    ),
    "manifest-missing-field": (
        "manifest.json",
        drop_task_prompt,
        "manifest.json: tasks.medqa_4opt.prompt: Field required",
    ),
    "run-file-old-schema": (
        "results.json",
        old_schema,
        "schema_version 0, but this medharness reads version 1",
    ),
}
RECORD_CASES = {*EDITED_FILES, "sample-row-invalid"}


@pytest.mark.parametrize(
    ("name", "edit", "message"), list(EDITED_FILES.values()), ids=list(EDITED_FILES)
)
def test_a_hand_edited_file_is_one_line_naming_file_and_field(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    edit: object,
    message: str,
) -> None:
    run = edited_run(tmp_path, name, edit)
    assert main(["report", str(run), "-o", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "r.html").exists()


def test_a_sample_row_with_a_missing_field_names_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(OLD_RUN, run)
    log = run / "samples/tuned/medqa_4opt.jsonl"
    lines = log.read_text().splitlines()
    row = json.loads(lines[2])
    del row["gold"]
    lines[2] = json.dumps(row)
    log.write_text("\n".join(lines) + "\n")
    assert main(["report", str(run), "-o", str(tmp_path / "r.html")]) == 2
    assert "samples/tuned/medqa_4opt.jsonl:3: gold: Field required" in capsys.readouterr().err
