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
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import write_fixture_data

HERE = Path(__file__).resolve().parent
# Where a run is killed. A model call is held by the fake model (``hold``), a stage of the
# runner by tests/run_paused.py; either way the kill lands while the run is provably there.
HELD_CALLS = {"generating": "generate", "scoring choices": "loglikelihood"}
HELD_STAGES = ("aggregating", "writing the report")
# the stages after the model calls hold nothing the calls' kill points miss: CI skips them
KILL_POINTS = [
    *HELD_CALLS,
    *(pytest.param(stage, marks=pytest.mark.heavy) for stage in HELD_STAGES),
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("resume")
    write_fixture_data(work / "data", scale=6)  # ~50 MedQA and ~35 MedQuAD test samples
    return work


def write_run(work: Path, name: str, hold: dict[str, Any] | None = None) -> tuple[Path, list[Path]]:
    """A run of two fake models; the first holds its calls as ``hold`` says."""
    traces, models = [], []
    for index in range(2):
        trace = work / f"{name}-trace{index}.log"
        script = work / f"{name}-model{index}.yaml"
        settings = {"babble_words": 30, "seed": index, "trace_file": str(trace)}
        if hold is not None and index == 0:
            settings["hold"] = hold
        script.write_text(yaml.safe_dump(settings))
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
                "bootstrap_resamples": 2000,
            }
        )
    )
    return config, traces


def start(config: Path, out: Path, *paused: str) -> subprocess.Popen[bytes]:
    """The run in the background; with ``paused`` (STAGE, MARK) held at that stage."""
    command = [str(HERE / "run_paused.py"), *paused] if paused else ["-m", "medharness"]
    with errors_of(out).open("ab") as errors:  # kept for the assertion messages below
        return subprocess.Popen(
            [sys.executable, *command, "run", str(config), "--out", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=errors,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        )


def errors_of(out: Path) -> Path:
    return out.with_name(f"{out.name}.stderr")


def said(out: Path) -> str:
    """The last lines the runs into ``out`` wrote to stderr."""
    path = errors_of(out)
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


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
    assert start(config, setup / "clean").wait(timeout=300) == 0, said(setup / "clean")
    return json.loads((setup / "clean/resumable/results.json").read_text())["results"]


@pytest.mark.parametrize("point", KILL_POINTS)
def test_killed_run_resumes_to_identical_results(
    point: str, setup: Path, uninterrupted: dict
) -> None:
    name = point.replace(" ", "-")
    mark, release = setup / f"{name}.held", setup / f"{name}.release"
    if point in HELD_CALLS:  # the first model's second call of that kind waits
        hold = {"after": 1, "until": str(release), "kind": HELD_CALLS[point]}
        config, traces = write_run(setup, name, hold)
        process = start(config, setup / name)
    else:
        config, traces = write_run(setup, name)
        process = start(config, setup / name, point, str(mark))
    out = setup / name
    staging = out / ".resumable.partial"
    deadline = time.time() + 300
    while not (mark.exists() or any(setup.glob(f"{release.name}.held.*"))):
        assert process.poll() is None, f"the run ended before the kill point ({point})\n{said(out)}"
        assert time.time() < deadline, f"kill point never reached ({point})"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "resumable").exists(), "a killed run must not look complete"

    finished = {f"m{i}": finished_prompts(staging, f"m{i}") for i in range(2)}
    for trace in traces:
        trace.unlink(missing_ok=True)
    release.touch()
    assert start(config, out).wait(timeout=300) == 0, said(out)

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
