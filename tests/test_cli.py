"""Every CLI path end to end with the fake model on fixture data: outputs and bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sacrebleu
from conftest import write_fake_config
from rouge_score import rouge_scorer

from medharness.cli import main


def test_run_writes_the_run_directory_contract(finished_run: Path) -> None:
    assert sorted(p.name for p in finished_run.iterdir()) == [
        "inputs",
        "manifest.json",
        "report.html",
        "results.json",
        "samples",
    ]
    inputs = [json.loads(line) for line in (finished_run / "inputs/medqa_4opt.jsonl").open()]
    assert inputs[0]["prompt"].startswith("Question: ") and inputs[0]["choices"][0] == "A"
    results = json.loads((finished_run / "results.json").read_text())
    assert results["schema_version"] == 1 and results["baseline"] == "base"
    assert set(results["results"]) == {"base", "other"}
    medqa = results["results"]["base"]["medqa_4opt"]
    assert medqa["n"] == 5
    low, high = medqa["metrics"]["acc"]["ci95"]
    assert 0 <= low <= medqa["metrics"]["acc"]["value"] <= high <= 1
    gen = results["results"]["base"]["medquad_gen"]
    assert set(gen["metrics"]) == {
        "rouge1",
        "rouge2",
        "rougeL",
        "rougeLsum",
        "bleu",
        "disclaimer_rate",
    }
    assert gen["settings"]["bleu"]["signature"].startswith("nrefs:1|")
    manifest = json.loads((finished_run / "manifest.json").read_text())
    assert set(manifest["tasks"]) == {"medquad_gen", "medqa_4opt", "pubmedqa", "medmcqa"}
    assert "medqa/us_4opt_test.jsonl" in manifest["data"]["sha256"]
    assert manifest["versions"]["transformers"]
    assert not list(finished_run.parent.glob(".*")), "no staging folder left behind"


def test_same_config_twice_gives_identical_results(
    finished_run: Path, fake_script: Path, tmp_path: Path
) -> None:
    again = write_fake_config(tmp_path / "again.yaml", fake_script)
    assert main(["run", str(again), "--out", str(tmp_path / "again")]) == 0
    first = json.loads((finished_run / "results.json").read_text())
    second = json.loads((tmp_path / "again/demo/results.json").read_text())
    assert first == second


def test_multiple_choice_samples_carry_choices_and_loglikelihoods(finished_run: Path) -> None:
    lines = (finished_run / "samples/base/medqa_4opt.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    assert len(lines) == 5
    assert first["choices"] == ["A", "B", "C", "D"] and len(first["loglikelihoods"]) == 4
    assert first["chosen"] == 0  # the fake script favours A for "symptom 0"
    assert first["metrics"]["acc"] == float(first["chosen"] == first["gold"])


def test_reported_rouge_and_bleu_recompute_from_samples(finished_run: Path) -> None:
    rows = [
        json.loads(line)
        for line in (finished_run / "samples/base/medquad_gen.jsonl").read_text().splitlines()
    ]
    metrics = json.loads((finished_run / "results.json").read_text())["results"]["base"][
        "medquad_gen"
    ]["metrics"]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"])
    for name in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        values = [scorer.score(r["target"], r["prediction"])[name].fmeasure for r in rows]
        assert metrics[name]["value"] == pytest.approx(sum(values) / len(values), abs=1e-12)
    bleu = sacrebleu.corpus_bleu([r["prediction"] for r in rows], [[r["target"] for r in rows]])
    stored = [r["bleu_stats"] for r in rows]
    fresh = sacrebleu.BLEU()._extract_corpus_statistics(
        [r["prediction"] for r in rows], [[r["target"] for r in rows]]
    )
    assert stored == [[int(v) for v in stats] for stats in fresh]
    assert metrics["bleu"]["value"] == pytest.approx(bleu.score, abs=1e-9)


def test_report_escapes_model_text(finished_run: Path) -> None:
    import base64
    import gzip
    import re

    html = (finished_run / "report.html").read_text()
    assert "<script>alert" not in html and "<img src=x" not in html
    embedded = re.search(r'id="samples-data">([^<]*)</script>', html)
    assert embedded is not None
    payload = json.loads(gzip.decompress(base64.b64decode(embedded.group(1))))
    answers = [
        text for column in payload["tasks"]["medquad_gen"]["answers"] for text in column["text"]
    ]
    assert "Ask a doctor. <script>alert('x')</script><img src=x onerror=alert(1)>" in answers
    assert "medquad_gen" in html and "(baseline)" in html
    assert "http://" not in html and "https://" not in html.split("<details>")[0]


def test_eval_prints_a_table(
    data_env: Path, fake_script: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "eval",
            "--model",
            f"fake:{fake_script}",
            "--tasks",
            "medqa_4opt,pubmedqa",
            "--limit",
            "3",
            "--out",
            str(tmp_path),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "medqa_4opt" in out and "pubmedqa" in out and "95% CI" in out
    assert (tmp_path / "eval-fake" / "results.json").is_file()


def test_failure_after_scoring_keeps_only_a_hidden_resumable_staging_folder(
    data_env: Path,
    fake_script: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import medharness.run.runner

    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    config = write_fake_config(tmp_path / "c.yaml", fake_script)
    with monkeypatch.context() as patch:
        patch.setattr(medharness.run.runner, "render_run_report", explode)
        with pytest.raises(RuntimeError):
            main(["run", str(config), "--out", str(tmp_path / "runs")])
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [".demo.partial"]
    finished = sorted(p.name for p in (tmp_path / "runs/.demo.partial/samples/base").iterdir())
    assert finished == ["medmcqa.jsonl", "medqa_4opt.jsonl", "medquad_gen.jsonl", "pubmedqa.jsonl"]
    assert main(["run", str(config), "--out", str(tmp_path / "runs")]) == 0
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["demo"]
    assert not (tmp_path / "runs/demo/run_state.json").exists()


def test_help_explains_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "run" in out and "eval" in out and "Exit codes" in out
