"""Kill a real run with SIGKILL at several points; the resumed run must finish with results
identical to an uninterrupted run and must not recompute any sample it had finished."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from conftest import write_fixture_data

Condition = Callable[[Path, Path], bool]


def trace_count(trace: Path, kind: str) -> int:
    if not trace.is_file():
        return 0
    return sum(1 for line in trace.read_text().splitlines() if line.startswith(kind))


def all_logs_final(staging: Path) -> bool:
    return len(list((staging / "samples").glob("*/*.jsonl"))) == 4


KILL_POINTS: dict[str, Condition] = {
    "generating": lambda staging, trace: trace_count(trace, "generate") >= 2,
    "scoring choices": lambda staging, trace: trace_count(trace, "loglikelihood") >= 2,
    "aggregating": lambda staging, trace: (
        all_logs_final(staging) and not (staging / "results.json").exists()
    ),
    "writing the report": lambda staging, trace: (staging / "results.json").exists(),
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("resume")
    write_fixture_data(work / "data", scale=6)  # ~50 MedQA and ~35 MedQuAD test samples
    return work


def write_run(work: Path, name: str) -> tuple[Path, list[Path]]:
    traces, models = [], []
    for index in range(2):
        trace = work / f"{name}-trace{index}.log"
        script = work / f"{name}-model{index}.yaml"
        script.write_text(
            yaml.safe_dump(
                {"babble_words": 30, "seed": index, "delay": 0.15, "trace_file": str(trace)}
            )
        )
        traces.append(trace)
        models.append({"name": f"m{index}", "model": f"fake:{script}"})
    config = work / f"{name}.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "resumable",
                "models": models,
                "tasks": ["medquad_gen", "medqa_4opt"],
                "data_dir": str(work / "data"),
                "bootstrap_resamples": 30000,
            }
        )
    )
    return config, traces


def start(config: Path, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "medharness", "run", str(config), "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )


def finished_prompts(staging: Path, model: str) -> set[str]:
    """Prompts of the samples whose rows had reached the disk when the run was killed."""
    asked = {}
    for path in (staging / "inputs").glob("*.jsonl"):
        asked.update({row["doc_id"]: row["prompt"] for row in map(json.loads, path.open())})
    prompts = set()
    for path in (staging / "samples" / model).glob("*.jsonl*"):
        for line in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):  # a torn line is not finished
                prompts.add(asked[json.loads(line)["doc_id"]])
    return prompts


def requested(trace: Path) -> set[str]:
    if not trace.is_file():
        return set()
    return {json.loads(line.split("\t", 1)[1]) for line in trace.read_text().splitlines()}


@pytest.fixture(scope="module")
def uninterrupted(setup: Path) -> dict:
    config, _ = write_run(setup, "clean")
    assert start(config, setup / "clean").wait(timeout=300) == 0
    return json.loads((setup / "clean/resumable/results.json").read_text())["results"]


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_killed_run_resumes_to_identical_results(
    point: str, setup: Path, uninterrupted: dict
) -> None:
    name = point.replace(" ", "-")
    config, traces = write_run(setup, name)
    out = setup / name
    staging = out / ".resumable.partial"
    process = start(config, out)
    deadline = time.time() + 120
    while not KILL_POINTS[point](staging, traces[0]) or not staging.exists():
        assert process.poll() is None, f"the run ended before the kill point ({point})"
        assert time.time() < deadline, f"kill point never reached ({point})"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "resumable").exists(), "a killed run must not look complete"

    finished = {f"m{i}": finished_prompts(staging, f"m{i}") for i in range(2)}
    for trace in traces:
        trace.unlink(missing_ok=True)
    assert start(config, out).wait(timeout=300) == 0

    results = json.loads((out / "resumable/results.json").read_text())["results"]
    assert results == uninterrupted
    assert not staging.exists()
    for index, trace in enumerate(traces):
        recomputed = requested(trace) & finished[f"m{index}"]
        assert not recomputed, f"{len(recomputed)} finished samples were recomputed"


def test_rerun_of_a_finished_run_reuses_every_unchanged_sample(
    setup: Path, uninterrupted: dict
) -> None:
    config, traces = write_run(setup, "clean")  # the same config as the finished run
    for trace in traces:
        trace.unlink(missing_ok=True)
    assert start(config, setup / "clean").wait(timeout=300) == 0
    assert requested(traces[0]) == set() and requested(traces[1]) == set()  # no model call
    results = json.loads((setup / "clean/resumable/results.json").read_text())["results"]
    assert results == uninterrupted

    script = setup / "clean-model1.yaml"  # change one model: only it is scored again
    script.write_text(script.read_text().replace("seed: 1", "seed: 7"))
    assert start(config, setup / "clean").wait(timeout=300) == 0
    assert requested(traces[0]) == set() and requested(traces[1])
    results = json.loads((setup / "clean/resumable/results.json").read_text())["results"]
    assert results["m0"] == uninterrupted["m0"] and results["m1"] != uninterrupted["m1"]
