"""lm-eval interop both ways: a run exported in lm-eval's layout and read by lm-eval's own
code, and lm-eval output folders (made with --log_samples) reported and gated as runs.

The real-model test runs the lm-eval CLI itself on the built-in model (20 MedQA questions, in
float32 and bfloat16) and checks medharness's reading of its files against lm-eval's own
numbers; a medharness evaluation of the same questions, exported, hashes like lm-eval's run.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REAL_DATA

from medharness.cli import main
from medharness.core.io import read_jsonl
from medharness.reports.runs import RunData


def export(run: Path, output: Path) -> list[Path]:
    assert main(["export", str(run), "--format", "lm-eval", "-o", str(output)]) == 0
    return sorted(output.rglob("*.json*"))


def read_all(path: Path) -> list[dict[str, Any]]:
    return list(read_jsonl(path))


def test_export_is_read_by_lm_evals_own_code(finished_run: Path, tmp_path: Path) -> None:
    from datasets import load_dataset
    from lm_eval.api.metrics import mean_stderr
    from lm_eval.utils import (
        get_file_task_name,
        get_results_filenames,
        get_sample_results_filenames,
        make_table,
    )

    paths = [str(p) for p in export(finished_run, tmp_path / "lm-eval")]
    ours = json.loads((finished_run / "results.json").read_text())["results"]
    for model, tasks in ours.items():
        [results_path] = [p for p in get_results_filenames(paths) if f"/{model}/" in p]
        samples = [p for p in get_sample_results_filenames(paths) if f"/{model}/" in p]
        assert sorted(get_file_task_name(Path(p).name) for p in samples) == sorted(tasks)
        results = json.loads(Path(results_path).read_text())
        assert results["n-shot"] == dict.fromkeys(tasks, 0)
        assert set(results["versions"]) == set(tasks) == set(results["configs"])
        table = make_table(results)
        for task, result in tasks.items():
            scores = results["results"][task]
            [path] = [p for p in samples if get_file_task_name(Path(p).name) == task]
            logged = load_dataset("json", data_files=path, split="train")  # as lm-eval reads it
            assert logged.num_rows == result["n"]
            for metric, value in result["metrics"].items():
                assert scores[f"{metric},none"] == value["value"]
                assert f"{value['value']:.4f}" in table
                if metric == "bleu":  # a corpus score, not a mean of the samples
                    assert scores["bleu_stderr,none"] == "N/A"
                elif metric in logged.column_names:
                    expected = mean_stderr(logged[metric])
                    assert math.isclose(scores[f"{metric}_stderr,none"], expected)


def test_export_reads_back_as_the_same_run(finished_run: Path, tmp_path: Path) -> None:
    export(finished_run, tmp_path / "lm-eval")
    original, exported = tmp_path / "original.md", tmp_path / "exported.md"
    assert main(["report", str(finished_run), "-o", str(original)]) == 0
    assert main(["report", str(tmp_path / "lm-eval"), "-o", str(exported)]) == 0
    # every value, interval, delta and test; only the title (the folder's name) differs
    assert original.read_text().splitlines()[1:] == exported.read_text().splitlines()[1:]


def taken_folder(run: Path, tmp: Path) -> list[str]:
    (tmp / "taken").mkdir()
    (tmp / "taken" / "keep.txt").write_text("mine")
    return ["export", str(run), "-o", str(tmp / "taken")]


def without_samples(run: Path, tmp: Path) -> list[str]:
    export(run, tmp / "lm-eval")
    for path in (tmp / "lm-eval").rglob("samples_medqa_4opt_*.jsonl"):
        path.unlink()
    return ["report", str(tmp / "lm-eval"), "-o", str(tmp / "r.html")]


def damaged_samples(run: Path, tmp: Path) -> list[str]:
    export(run, tmp / "lm-eval")
    for path in (tmp / "lm-eval").rglob("samples_medqa_4opt_*.jsonl"):
        rows = read_all(path)
        del rows[0]["filtered_resps"]
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return ["gate", str(tmp / "lm-eval"), "--policy", str(write_policy(tmp, 5))]


INTEROP_CASES = {  # id (as in docs/errors.md) -> (the command after its set-up, the line says)
    "export-folder-exists": (taken_folder, "taken already exists; choose a new folder"),
    "lm-eval-without-samples": (without_samples, "run lm-eval again with --log_samples"),
    "lm-eval-damaged-samples": (damaged_samples, "not a samples file of lm-eval --log_samples"),
}


@pytest.mark.parametrize("case", list(INTEROP_CASES))
def test_bad_interop_input_is_one_clear_line(
    case: str, finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prepare, says = INTEROP_CASES[case]
    argv = prepare(finished_run, tmp_path)
    capsys.readouterr()
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith("medharness: error: ") and error.count("\n") == 1
    assert says in error
    assert not (tmp_path / "r.html").exists()
    if case == "export-folder-exists":
        assert [p.name for p in (tmp_path / "taken").iterdir()] == ["keep.txt"]


def write_policy(folder: Path, min_samples: int) -> Path:
    path = folder / "policy.yaml"
    policy = {
        "min_samples": min_samples,
        "required_tasks": ["medqa_4opt"],
        "regressions": {"medqa_4opt.acc": 50.0},
    }
    path.write_text(yaml.safe_dump(policy), encoding="utf-8")
    return path


def lm_eval_run(output: Path, dtype: str, limit: int) -> Path:
    """The lm-eval CLI on the built-in model and the lm-eval view of medqa_4opt."""
    from medharness.models.builtin import builtin_model_dir

    lm_eval_cli = shutil.which("lm-eval", path=str(Path(sys.executable).parent))
    assert lm_eval_cli is not None
    command = [
        lm_eval_cli, "run", "--model", "hf",
        "--model_args", f"pretrained={builtin_model_dir()},dtype={dtype}",
        "--tasks", "medqa_4opt", "--include_path", str(Path(__file__).parents[1] / "tasks"),
        "--limit", str(limit), "--batch_size", "8", "--device", "cpu",
        "--log_samples", "--output_path", str(output),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return output


@pytest.mark.slow
@pytest.mark.skipif(REAL_DATA is None, reason="needs MEDHARNESS_DATA_DIR")
def test_real_lm_eval_folders_are_reported_and_gated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    limit = 20
    full = lm_eval_run(tmp_path / "fp32", "float32", limit)
    half = lm_eval_run(tmp_path / "bf16", "bfloat16", limit)
    accuracy = {}
    for folder in (full, half):
        [results_path] = folder.glob("*/results_*.json")
        theirs = json.loads(results_path.read_text())
        [samples_path] = folder.glob("*/samples_medqa_4opt_*.jsonl")
        choices = [
            max(range(4), key=lambda i, s=s: float(s["filtered_resps"][i][0]))
            for s in sorted(read_all(samples_path), key=lambda s: s["doc_id"])
        ]
        report = tmp_path / f"{folder.name}.md"
        assert main(["report", str(folder), "-o", str(report)]) == 0
        acc = accuracy[folder] = theirs["results"]["medqa_4opt"]["acc,none"]
        assert f"| {limit} | {100 * acc:.2f} [" in report.read_text()
        run = RunData.open(folder)
        assert [row.chosen for row in run.samples(run.models[0], "medqa_4opt")] == choices

    # the bf16 deployment gated against the float32 one, paired on the same questions
    capsys.readouterr()
    code = main(
        ["gate", str(half), "--policy", str(write_policy(tmp_path, limit)), "--baseline", str(full)]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.startswith("medharness gate PASSED")
    assert f"baseline {accuracy[full]:.4f} vs candidate {accuracy[half]:.4f}" in out

    # medharness on the same questions, exported: the same task hash and log-likelihoods
    evaluate = [
        "eval", "--model", "smollm2-135m-instruct", "--tasks", "medqa_4opt",
        "--limit", str(limit), "--out", str(tmp_path / "ours"), "--batch-size", "8",
    ]  # fmt: skip
    assert main(evaluate) == 0
    exported = tmp_path / "ours-lm-eval"
    export(tmp_path / "ours" / "eval-smollm2-135m-instruct", exported)
    [our_results] = exported.glob("*/results_*.json")
    [their_results] = full.glob("*/results_*.json")
    hashes = [json.loads(p.read_text())["task_hashes"] for p in (our_results, their_results)]
    assert hashes[0] == hashes[1]
    [ours_path] = exported.glob("*/samples_medqa_4opt_*.jsonl")
    [theirs_path] = full.glob("*/samples_medqa_4opt_*.jsonl")
    for a, b in zip(read_all(ours_path), read_all(theirs_path), strict=True):
        assert a["doc_id"] == b["doc_id"] and a["doc_hash"] == b["doc_hash"]
        for x, y in zip(a["filtered_resps"], b["filtered_resps"], strict=True):
            assert math.isclose(float(x[0]), float(y[0]), abs_tol=1e-4)
