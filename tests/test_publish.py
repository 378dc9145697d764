"""Sharing results: a model card's model-index read back by the hub library's own parser, the
folder `publish` uploads opened by the hub's dataset-card parser and by `datasets`, and the
upload itself by the real hub client against a hub stand-in on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import os
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from medharness.cli import main
from medharness.core.records import TaskIdentity
from medharness.reports.model_index import dataset_of

TOKEN = "hf_medharness_test_token_0123456789"


def test_model_index_is_parsed_by_the_hub_library_with_the_run_values(
    finished_run: Path, tmp_path: Path
) -> None:
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard import metadata_load

    card = tmp_path / "README.md"
    assert main(["report", str(finished_run), "-o", str(card), "--model-index"]) == 0
    assert "## Evaluation results" in card.read_text()
    metadata = metadata_load(card)
    assert metadata is not None and metadata["model-index"][0]["name"] == "other"
    results = json.loads((finished_run / "results.json").read_text())["results"]["other"]
    parsed = ModelCard.load(card).data.eval_results
    assert parsed is not None
    assert {(r.task_name, r.metric_config): r.metric_value for r in parsed} == {
        (task, metric): value["value"]
        for task, result in results.items()
        for metric, value in result["metrics"].items()
    }
    medqa = next(r for r in parsed if r.task_name == "medqa_4opt")
    assert (medqa.task_type, medqa.metric_type, medqa.dataset_split) == (
        "multiple-choice",
        "accuracy",
        "test",
    )
    assert medqa.dataset_args is not None and len(medqa.dataset_args["data_sha256"]) == 64


def test_model_index_of_a_named_model(finished_run: Path, tmp_path: Path) -> None:
    from huggingface_hub.repocard import metadata_load

    card = tmp_path / "card.md"
    assert main(["report", str(finished_run), "-o", str(card), "--model-index", "base"]) == 0
    assert metadata_load(card)["model-index"][0]["name"] == "base"  # type: ignore[index]


def test_model_index_names_the_hub_copy_a_run_read_and_its_revision() -> None:
    revision = "0123456789abcdef0123456789abcdef01234567"
    identity = TaskIdentity(
        version="1",
        kind="multiple_choice",
        summary="MedQA",
        prompt="p",
        n=3,
        sample_ids_sha256="0" * 64,
        data_sha256={f"hub:GBaker/MedQA-USMLE-4-options-hf@{revision}": "1" * 64},
    )
    dataset = dataset_of("medqa_4opt", identity)
    assert (dataset["type"], dataset["revision"]) == ("GBaker/MedQA-USMLE-4-options-hf", revision)


def dry_run(run: Path, folder: Path) -> Path:
    command = ["publish", str(run), "--hub", "team/evals", "--folder", str(folder), "--dry-run"]
    assert main(command) == 0
    return folder


def test_the_upload_folder_opens_in_the_hubs_card_parser_and_datasets(
    finished_run: Path, tmp_path: Path
) -> None:
    from datasets import load_dataset
    from huggingface_hub import DatasetCard

    folder = dry_run(finished_run, tmp_path / "upload")
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    in_run = sorted(
        str(p.relative_to(finished_run))
        for p in finished_run.rglob("*")
        if p.is_file() and p.parts[len(finished_run.parts)] in ("inputs", "samples")
    )
    assert files == sorted(["README.md", "manifest.json", "report.html", "results.json", *in_run])
    configs = DatasetCard.load(folder / "README.md").data.to_dict()["configs"]
    results = json.loads((finished_run / "results.json").read_text())["results"]
    assert len(configs) == sum(len(tasks) for tasks in results.values())
    for config in configs:
        model, task = config["config_name"].split("__")
        [data_file] = config["data_files"]
        rows = load_dataset("json", data_files=str(folder / data_file["path"]), split="train")
        assert rows.num_rows == results[model][task]["n"]


def lowered(headers: Any) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


@pytest.fixture
def hub_stand_in() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Answers the requests an upload makes (create the repository, validate the card's YAML,
    pre-upload, commit) and records each."""
    requests: list[dict[str, Any]] = []

    class Hub(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            requests.append({"path": self.path, "headers": lowered(self.headers), "body": body})
            endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
            if self.path == "/api/repos/create":
                answer: dict[str, Any] = {"url": f"{endpoint}/datasets/team/evals"}
            elif "/preupload/" in self.path:
                paths = [f["path"] for f in json.loads(body)["files"]]
                answer = {
                    "files": [
                        {"path": p, "uploadMode": "regular", "shouldIgnore": False} for p in paths
                    ]
                }
            elif "/commit/" in self.path:
                oid = "c0ffee" * 6 + "c0ff"
                answer = {
                    "commitOid": oid,
                    "commitUrl": f"{endpoint}/datasets/team/evals/commit/{oid}",
                }
            else:
                answer = {}
            self.reply(answer)

        def do_GET(self) -> None:
            requests.append({"path": self.path, "headers": lowered(self.headers), "body": b""})
            self.reply({})

        def reply(self, answer: dict[str, Any]) -> None:
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", requests
    server.shutdown()


def test_publish_sends_the_folder_as_one_commit_and_keeps_the_token_out(
    finished_run: Path, tmp_path: Path, hub_stand_in: tuple[str, list[dict[str, Any]]]
) -> None:
    endpoint, requests = hub_stand_in
    expected = dry_run(finished_run, tmp_path / "expected")
    kept = tmp_path / "kept"
    env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_TOKEN": TOKEN, "HF_HUB_OFFLINE": "0"}
    command = ["publish", str(finished_run), "--hub", "team/evals", "--folder", str(kept)]
    done = subprocess.run(
        [sys.executable, "-m", "medharness", *command],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "team/evals at revision " + "c0ffee" * 6 + "c0ff" in done.stdout
    [created] = [r for r in requests if r["path"] == "/api/repos/create"]
    assert json.loads(created["body"])["type"] == "dataset"
    [commit] = [r for r in requests if "/api/datasets/team/evals/commit/" in r["path"]]
    lines = [json.loads(line) for line in commit["body"].decode().splitlines()]
    sent = {
        line["value"]["path"]: base64.b64decode(line["value"]["content"])
        for line in lines
        if line["key"] == "file"
    }
    assert sent == {
        str(p.relative_to(expected)): p.read_bytes() for p in expected.rglob("*") if p.is_file()
    }
    # the token goes in the Authorization header of each request and nowhere else
    writes = [r for r in requests if r["path"].startswith(("/api/repos/", "/api/datasets/"))]
    assert len(writes) >= 3  # create, pre-upload, commit
    assert all(r["headers"].get("authorization") == f"Bearer {TOKEN}" for r in writes)
    assert TOKEN not in done.stdout + done.stderr
    assert not [p for p in kept.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]


def taken(tmp: Path) -> str:
    (tmp / "taken").mkdir()
    return str(tmp / "taken")


PUBLISH_CASES = {  # id (as in docs/errors.md) -> (arguments after the run, the line says)
    "publish-nowhere": (
        lambda tmp: ["publish"],
        "say where to publish: --hub ORG/NAME, --wandb PROJECT, or both",
    ),
    "publish-bad-repo": (lambda tmp: ["publish", "--hub", "no-slash"], "expected ORG/NAME"),
    "publish-dry-run-without-folder": (
        lambda tmp: ["publish", "--hub", "a/b", "--dry-run"],
        "--dry-run writes the folder only: give it with --folder DIR",
    ),
    "publish-folder-exists": (
        lambda tmp: ["publish", "--hub", "a/b", "--folder", taken(tmp)],
        "taken already exists; choose a new folder",
    ),
    "model-index-not-markdown": (
        lambda tmp: ["report", "-o", str(tmp / "r.html"), "--model-index"],
        "--model-index goes in a model card: write a .md file with -o",
    ),
    "model-index-unknown-model": (
        lambda tmp: ["report", "-o", str(tmp / "r.md"), "--model-index", "nope"],
        "no model 'nope'; models: base, other",
    ),
}


@pytest.mark.parametrize("case", list(PUBLISH_CASES))
def test_bad_sharing_input_is_one_clear_line(
    case: str, finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    arguments, says = PUBLISH_CASES[case]
    command, *rest = arguments(tmp_path)
    capsys.readouterr()
    assert main([command, str(finished_run), *rest]) == 2
    error = capsys.readouterr().err
    assert error.startswith("medharness: error: ") and error.count("\n") == 1
    assert says in error
    assert not [p for p in tmp_path.glob("r.*")]


def wandb_records(path: Path) -> Iterator[Any]:
    """The records of an offline W&B run file: LevelDB's log format (32 KiB blocks, each
    record a 7-byte header of crc, length and kind: full, or first/middle/last of a record
    split across blocks) after W&B's 7-byte file header."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    position, pending = 7, b""
    while position + 7 <= len(data):
        if (left := 32768 - position % 32768) < 7:
            position += left  # the block's zero padding
            continue
        length, kind = struct.unpack("<HB", data[position + 4 : position + 7])
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # full, or last part
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record
            pending = b""


def test_wandb_offline_run_holds_the_metrics_tables_and_records(
    finished_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_API_KEY", TOKEN)
    monkeypatch.setenv("WANDB_SILENT", "true")
    assert main(["publish", str(finished_run), "--wandb", "medical-evals"]) == 0
    [folder] = (tmp_path / "wandb").glob("offline-run-*")
    [log] = folder.glob("run-*.wandb")
    summary: dict[str, Any] = {}
    artifacts = {}
    runs = []
    for record in wandb_records(log):
        kind = record.WhichOneof("record_type")
        if kind == "summary":
            summary.update(
                (i.key, json.loads(i.value_json)) for i in record.summary.update if i.key
            )
        elif kind == "artifact":
            artifacts[record.artifact.name] = sorted(
                m.path for m in record.artifact.manifest.contents
            )
        elif kind == "run":
            runs.append((record.run.project, record.run.display_name))
        elif kind == "exit":
            runs.append(("exit", ""))  # written last: the file is complete
    assert runs == [("medical-evals", "demo"), ("exit", "")]
    results = json.loads((finished_run / "results.json").read_text())["results"]
    for model, tasks in results.items():
        for task, result in tasks.items():
            for metric, value in result["metrics"].items():
                assert summary[f"{model}/{task}/{metric}"] == value["value"]
                assert summary[f"{model}/{task}/{metric}_ci95"] == value["ci95"]
            [table] = folder.glob(f"files/media/table/samples/{model}/{task}_*.table.json")
            logged = json.loads(table.read_text())
            answers = [row[logged["columns"].index("answer")] for row in logged["data"]]
            sample_log = finished_run / "samples" / model / f"{task}.jsonl"
            rows = [json.loads(line) for line in sample_log.read_text().splitlines()]
            assert answers == [row["prediction"] for row in rows]
    assert artifacts["demo-evaluation"] == ["manifest.json", "report.html", "results.json"]
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
