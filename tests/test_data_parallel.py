"""Data-parallel evaluation: ``accelerate launch --num_processes 2 -m medharness run`` (two CPU
processes over gloo, the recipe training uses) shards every task by chunks of the evaluation
order, rank 0 gathers and writes, and the run equals a single process's byte for byte; a
launch killed mid-task resumes each rank from its own partial log."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from conftest import write_fixture_data

from medharness.cli import main

LAUNCH = [
    sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes=2",
    "--num_machines=1", "--mixed_precision=no", "--dynamo_backend=no", "-m", "medharness",
]  # fmt: skip


def write_config(folder: Path, data: Path, model: str) -> Path:
    config = {
        "name": "dp",
        "data_dir": str(data),
        "models": [{"name": "base", "model": model, "batch_size": 4}],
        "tasks": ["medqa_4opt", "medquad_gen"],
        "generation": {"max_new_tokens": 8},
    }
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def files(run: Path) -> dict[str, bytes]:
    names = ["results.json", "samples/base/medqa_4opt.jsonl", "samples/base/medquad_gen.jsonl"]
    return {name: (run / name).read_bytes() for name in names}


def test_two_processes_write_what_one_process_writes(tiny_llama: Path, tmp_path: Path) -> None:
    data = write_fixture_data(tmp_path / "data", scale=4)  # 32 and 29 samples: 2 chunks each
    config = write_config(tmp_path, data, str(tiny_llama))
    launched = subprocess.run(
        [*LAUNCH, "run", str(config), "--out", str(tmp_path / "two")],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert main(["run", str(config), "--out", str(tmp_path / "one")]) == 0
    assert files(tmp_path / "two" / "dp") == files(tmp_path / "one" / "dp")
    manifest = json.loads((tmp_path / "two" / "dp" / "manifest.json").read_text())
    assert manifest["models"]["base"]["processes"] == 2
    assert not list((tmp_path / "two").rglob("*.partial"))


def descendants(pid: int) -> list[int]:
    """Every process under ``pid``, from /proc."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def traced(trace: Path) -> list[str]:
    return trace.read_text().splitlines() if trace.exists() else []


def test_a_killed_launch_resumes_each_rank_from_its_own_partial_log(tmp_path: Path) -> None:
    data = write_fixture_data(tmp_path / "data", scale=8)  # 64 questions: 2 chunks per rank
    trace, release = tmp_path / "calls.log", tmp_path / "release"
    hold = {"after": 1, "until": str(release)}  # each rank's second chunk waits for release
    script = tmp_path / "slow.yaml"
    script.write_text(yaml.safe_dump({"trace_file": str(trace), "hold": hold}), encoding="utf-8")
    config = write_config(tmp_path, data, f"fake:{script}")
    settings = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**settings, "tasks": ["medqa_4opt"]}), encoding="utf-8")
    command = [*LAUNCH, "run", str(config), "--out", str(tmp_path / "two")]

    launch = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    staging = tmp_path / "two" / ".dp.partial" / "samples" / "base"
    shares = [staging / f"medqa_4opt.jsonl.rank{rank}-of-2.partial" for rank in (0, 1)]
    deadline = time.monotonic() + 300
    while not (
        all(p.is_file() and p.read_text().count("\n") >= 16 for p in shares)
        and len(list(tmp_path.glob("release.held.*"))) == 2  # both ranks mid-chunk
    ):
        assert launch.poll() is None and time.monotonic() < deadline, "no rank finished a chunk"
        time.sleep(0.05)
    for pid in [launch.pid, *descendants(launch.pid)]:  # workers run in sessions of their own
        os.kill(pid, signal.SIGKILL)
    launch.wait()
    kept = {json.loads(line)["doc_id"] for p in shares for line in p.read_text().splitlines()}
    assert len(kept) >= 32
    sent_before = len(traced(trace))
    release.touch()

    resumed = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    asked_again = traced(trace)[sent_before:]
    assert 0 < len(asked_again) <= 64 - len(kept)  # one line per question asked
    inputs = (tmp_path / "two" / "dp" / "inputs" / "medqa_4opt.jsonl").read_text()
    prompts = {row["doc_id"]: row["prompt"] for row in map(json.loads, inputs.splitlines())}
    assert not {json.dumps(prompts[doc_id]) for doc_id in kept} & {
        line.split("\t", 1)[1] for line in asked_again
    }

    assert main(["run", str(config), "--out", str(tmp_path / "one")]) == 0
    one = tmp_path / "one" / "dp"
    two = tmp_path / "two" / "dp"
    for name in ("results.json", "samples/base/medqa_4opt.jsonl"):
        assert (two / name).read_bytes() == (one / name).read_bytes()
