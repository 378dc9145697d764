"""Built-in tasks from hub copies of their datasets, read through ``datasets.load_dataset``
from fixture copies in the hubs' own file layouts (offline): the same split rules and the same
prompts and choices as the official files give, and a manifest that says which source."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from medharness.cli import main
from medharness.config import TaskEntry
from medharness.core.errors import UserError
from medharness.core.io import read_jsonl
from medharness.tasks.medquad import load_pairs, load_split
from medharness.trainers.data import medqa_train_examples


@pytest.fixture(autouse=True)
def offline_datasets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))


def keivalya_copy(fixture_data: Path, folder: Path) -> Path:
    """MedQuAD as keivalya/MedQuad-MedicalQnADataset holds it: one CSV of qtype, Question,
    Answer, in its own order, with an unanswered row."""
    pairs, _ = load_pairs(fixture_data / "medquad")
    folder.mkdir()
    with (folder / "medDataset_processed.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["qtype", "Question", "Answer"])
        for pair in reversed(pairs):
            writer.writerow([pair.qtype, pair.question, pair.answer])
        writer.writerow(["causes", "What causes nothing ?", ""])
    return folder


def gbaker_rows(records: list[dict[str, Any]], split: str) -> list[dict[str, Any]]:
    """Official MedQA records in lm-eval's columns (sent1 the question, ending0-3 the
    options, label the right one's index)."""
    return [
        {"id": f"{split}-{index:05d}", "sent1": row["question"], "sent2": "",
         **{f"ending{k}": row["options"][letter] for k, letter in enumerate("ABCD")},
         "label": "ABCD".index(row["answer_idx"])}
        for index, row in enumerate(records)
    ]  # fmt: skip


def gbaker_copy(fixture_data: Path, folder: Path) -> Path:
    """MedQA as GBaker/MedQA-USMLE-4-options-hf holds it: a parquet file per split under
    data/. Its train split here: the dev questions, and two test questions again."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    test = list(read_jsonl(fixture_data / "medqa" / "us_4opt_test.jsonl"))
    train = list(read_jsonl(fixture_data / "medqa" / "us_4opt_dev.jsonl")) + test[:2]
    (folder / "data").mkdir(parents=True)
    for split, records in (("test", test), ("train", train)):
        table = pa.Table.from_pylist(gbaker_rows(records, split))
        pq.write_table(table, folder / "data" / f"{split}-00000-of-00001.parquet")
    return folder


def test_medquad_from_the_hub_layout_keeps_the_same_split(
    fixture_data: Path, tmp_path: Path
) -> None:
    copy = keivalya_copy(fixture_data, tmp_path / "keivalya")
    entry = TaskEntry.model_validate({"name": "medquad_gen", "source": str(copy)})
    loaded = entry.task(tmp_path).load(tmp_path)
    official = load_split(fixture_data / "medquad", "test")
    assert sorted((s.prompt, s.target) for s in loaded.samples) == sorted(
        (s.prompt, s.target) for s in official.samples
    )
    assert loaded.skipped == {"no answer": 1}
    assert list(loaded.file_hashes) == ["local:keivalya"]


def lm_eval_preprocessing(relative: str) -> Any:
    """A task's preprocessing module from lm-eval's own task folder."""
    import importlib.util

    import lm_eval

    module_path = Path(lm_eval.__file__).parent / "tasks" / relative
    spec = importlib.util.spec_from_file_location(module_path.stem, module_path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_medqa_from_lm_evals_source_gives_its_prompt_and_the_official_choices(
    fixture_data: Path, tmp_path: Path
) -> None:
    copy = gbaker_copy(fixture_data, tmp_path / "gbaker")
    hub = TaskEntry.model_validate({"name": "medqa_4opt", "source": str(copy)}).task(tmp_path)
    official = TaskEntry.model_validate({"name": "medqa_4opt"}).task(tmp_path)
    from_hub = hub.load(tmp_path).samples
    from_files = official.load(fixture_data / "medqa").samples
    assert [(s.prompt, s.choices, s.gold) for s in from_hub] == [
        (s.prompt, s.choices, s.gold) for s in from_files
    ]
    # lm-eval's own doc_to_text on the same rows, as its medqa_4options task reads them
    preprocess = lm_eval_preprocessing("medqa/preprocess_medqa.py")
    import pyarrow.parquet as pq

    rows = pq.read_table(copy / "data" / "test-00000-of-00001.parquet").to_pylist()
    assert [s.prompt for s in from_hub] == [preprocess.doc_to_text(row) for row in rows]
    assert [s.gold for s in from_hub] == [preprocess.doc_to_target(row) for row in rows]


def test_a_run_on_a_hub_copy_records_its_source_and_is_not_compared_as_the_same_data(
    fixture_data: Path,
    data_env: Path,
    fake_script: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    copy = gbaker_copy(fixture_data, tmp_path / "gbaker")
    runs = []
    for name, task in (("hub", {"name": "medqa_4opt", "source": str(copy)}),
                       ("files", {"name": "medqa_4opt"})):  # fmt: skip
        config = {
            "name": name,
            "output_dir": str(tmp_path / "runs"),
            "models": [{"name": "fake", "model": f"fake:{fake_script}"}],
            "tasks": [task],
        }
        path = tmp_path / f"{name}.yaml"
        path.write_text(json.dumps(config), encoding="utf-8")
        assert main(["run", str(path)]) == 0
        runs.append(tmp_path / "runs" / name)
    manifest = json.loads((runs[0] / "manifest.json").read_text())
    identity = manifest["tasks"]["medqa_4opt"]
    assert list(identity["data_sha256"]) == ["local:gbaker"]
    assert "rows from local:gbaker" in identity["summary"]
    report = tmp_path / "both.html"
    assert main(["report", *map(str, runs), "-o", str(report)]) == 0
    assert "differs from the baseline in data files" in report.read_text()


def bigbio_pubmedqa_copy(official: Path, folder: Path) -> Path:
    """PubMedQA as bigbio/pubmed_qa's parquet holds it: one folder per configuration, named
    in the card's ``configs``; rows in the release's fields with the PMID as ``pubid``."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    entries = json.loads(official.read_text(encoding="utf-8"))
    rows = [{"pubid": int(pmid), **entry} for pmid, entry in reversed(entries.items())]
    config = "pubmed_qa_labeled_fold0_source"
    (folder / config).mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / config / "test-00000-of-00001.parquet")
    card = {"configs": [{"config_name": config, "data_files": [
        {"split": "test", "path": f"{config}/test-00000-of-00001.parquet"}]}]}  # fmt: skip
    (folder / "README.md").write_text(f"---\n{json.dumps(card)}\n---\n", encoding="utf-8")
    return folder


def test_pubmedqa_from_lm_evals_source_gives_its_prompt_and_the_official_answers(
    fixture_data: Path, tmp_path: Path
) -> None:
    official = fixture_data / "pubmedqa" / "test_set.json"
    copy = bigbio_pubmedqa_copy(official, tmp_path / "pubmed_qa")
    entry = TaskEntry.model_validate({"name": "pubmedqa", "source": str(copy)})
    hub = {s.doc_id: s for s in entry.task(tmp_path).load(tmp_path).samples}
    files = TaskEntry.model_validate({"name": "pubmedqa"}).task(tmp_path)
    from_files = {s.doc_id: s for s in files.load(fixture_data / "pubmedqa").samples}
    assert set(hub) == set(from_files)
    for pmid, sample in hub.items():
        assert (sample.prompt, sample.choices, sample.gold) == (
            from_files[pmid].prompt, from_files[pmid].choices, from_files[pmid].gold,
        )  # fmt: skip
    # lm-eval's own prompt function on the same rows (its pubmedqa task reads this copy)
    preprocess = lm_eval_preprocessing("pubmedqa/preprocess_pubmedqa.py")
    entries = json.loads(official.read_text(encoding="utf-8"))
    assert all(hub[p].prompt == preprocess.doc_to_text(e) for p, e in entries.items())


SOURCE_CASES = {  # id (as in docs/errors.md) -> (task entry, what the one line says)
    "source-without-mapping": (
        {"name": "medqa_taiwan", "source": "hub"},
        "task medqa_taiwan: no hub source is known for it",
    ),
    "source-malformed": (
        {"name": "medqa_4opt", "source": "hub:nope"}, "expected hub:ORG/NAME[@REVISION]"
    ),
    "source-missing-folder": (
        {"name": "medqa_4opt", "source": "missing-folder"}, "neither hub:ORG/NAME nor a folder"
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(SOURCE_CASES))
def test_a_bad_source_is_one_line(
    case: str, tmp_path: Path, fake_script: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    task, message = SOURCE_CASES[case]
    config = {"name": "bad", "models": [{"name": "f", "model": f"fake:{fake_script}"}],
              "tasks": [task], "output_dir": str(tmp_path)}  # fmt: skip
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps(config), encoding="utf-8")
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_medqa_trains_on_its_train_split_without_a_test_question(
    fixture_data: Path, tmp_path: Path
) -> None:
    copy = gbaker_copy(fixture_data, tmp_path / "gbaker")
    dev = list(read_jsonl(fixture_data / "medqa" / "us_4opt_dev.jsonl"))
    from_hub = medqa_train_examples(fixture_data, None, str(copy))
    assert len(from_hub.examples) == len(dev)  # the two test questions dropped
    assert "2 also in a test split dropped" in from_hub.description
    assert all(e["prompt"].startswith("Question: (dev)") for e in from_hub.examples)
    assert {e["completion"] for e in from_hub.examples} <= {" A", " B", " C", " D"}

    root = tmp_path / "root"
    shutil.copytree(fixture_data / "medqa", root / "medqa")
    test = list(read_jsonl(root / "medqa" / "us_4opt_test.jsonl"))
    train_file = root / "medqa" / "us_4opt_train.jsonl"
    train_file.write_text("".join(json.dumps(r) + "\n" for r in dev + test[3:5]))
    from_file = medqa_train_examples(root, None, None)
    assert from_file.examples == from_hub.examples
    assert list(from_file.file_hashes) == ["medqa/us_4opt_train.jsonl"]
    train_file.unlink()
    with pytest.raises(UserError, match="MedQA train file not found"):
        medqa_train_examples(root, None, None)


def test_a_model_trains_on_the_hub_copys_train_split(
    fixture_data: Path, tiny_llama: Path, tmp_path: Path
) -> None:
    copy = gbaker_copy(fixture_data, tmp_path / "gbaker")
    train = {"data": "medqa_train", "source": str(copy), "max_steps": 2, "batch_size": 2}
    config = {
        "name": "medqa-train",
        "data_dir": str(fixture_data),
        "output_dir": str(tmp_path / "runs"),
        "models": [{"name": "tuned", "model": str(tiny_llama), "batch_size": 1, "train": train}],
        "tasks": [{"name": "medqa_4opt", "limit": 4}],
    }
    path = tmp_path / "train.yaml"
    path.write_text(json.dumps(config), encoding="utf-8")
    assert main(["train", str(path)]) == 0
    saved = json.loads((tmp_path / "runs/medqa-train/train/tuned/train_config.json").read_text())
    assert "train split from local:gbaker" in json.dumps(saved)


def test_medmcqa_from_lm_evals_source_counts_cop_from_zero(
    fixture_data: Path, tmp_path: Path
) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    records = list(read_jsonl(fixture_data / "medmcqa" / "dev.jsonl"))
    rows = [{**row, "cop": row["cop"] - 1} for row in records]  # the hub copy is 0-based
    (tmp_path / "medmcqa-hub" / "data").mkdir(parents=True)
    table = pa.Table.from_pylist(rows)
    pq.write_table(table, tmp_path / "medmcqa-hub/data/validation-00000-of-00001.parquet")
    entry = TaskEntry.model_validate({"name": "medmcqa", "source": str(tmp_path / "medmcqa-hub")})
    from_hub = entry.task(tmp_path).load(tmp_path).samples
    official = TaskEntry.model_validate({"name": "medmcqa"}).task(tmp_path)
    from_files = official.load(fixture_data / "medmcqa").samples
    assert [(s.prompt, s.gold) for s in from_hub] == [(s.prompt, s.gold) for s in from_files]


def test_an_unpinned_hub_source_is_pinned_to_the_commit_it_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from medharness.tasks import hub_sources

    class Info:
        sha = "f" * 40

    class Api:
        def dataset_info(self, repo: str, revision: str | None) -> Info:
            assert (repo, revision) == ("GBaker/MedQA-USMLE-4-options-hf", None)
            return Info()

    monkeypatch.setattr("huggingface_hub.HfApi", Api)
    source = hub_sources.source_for("medqa_4opt", "hub", Path.cwd())
    assert hub_sources.pinned(source).label == f"hub:GBaker/MedQA-USMLE-4-options-hf@{'f' * 40}"
    fixed = hub_sources.parse_source("hub:org/name@" + "a" * 40, Path.cwd())
    assert hub_sources.pinned(fixed) is fixed
