"""Trainings that survive kills: SIGKILL at a random step, or in the middle of a checkpoint
save, then the same command again; the final adapter must equal an uninterrupted training's,
in one process and under a two-process accelerate launch. Changed settings start over.
Evaluation during training logs validation curves and keeps the best checkpoint."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_data_parallel import descendants
from test_training import lora_entry, write_config

from medharness.cli import main

ROOT = Path(__file__).resolve().parents[1]
FAULTS = Path(__file__).with_name("train_with_faults.py")
STEPS = 40
LAUNCH_TWO = [
    sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes=2",
    "--num_machines=1", "--mixed_precision=no", "--dynamo_backend=no",
]  # fmt: skip


def checkpointed(tiny: Path, **train: Any) -> dict[str, Any]:
    """A 40-step LoRA training with a checkpoint every 5 steps and LoRA dropout on, so the
    RNG state must be restored too."""
    return lora_entry(tiny, **{"max_steps": STEPS, "batch_size": 1, "save_steps": 5, **train})


def command(config: Path, processes: int) -> list[str]:
    launcher = LAUNCH_TWO if processes == 2 else [sys.executable]
    return [*launcher, str(FAULTS), str(config)]


def train(config: Path, processes: int, **faults: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(config, processes),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, **faults},
    )


def kill_at_step(config: Path, processes: int, step: int) -> int:
    """Start the training, SIGKILL it and its workers once ``step`` is logged; return the
    last step the log shows."""
    log = config.parent / "runs" / "trained" / "train" / ".tuned.work" / "log.jsonl"
    process = subprocess.Popen(
        command(config, processes),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "STEP_DELAY_S": "0.15"},
    )
    logged = 0
    deadline = time.monotonic() + 300
    try:
        while logged < step:
            assert process.poll() is None, f"the training ended before step {step}"
            assert time.monotonic() < deadline, "no progress in the training log"
            lines = log.read_text().splitlines() if log.is_file() else []
            logged = max((json.loads(line)["step"] for line in lines if line), default=0)
            time.sleep(0.01)
    finally:
        for pid in [process.pid, *descendants(process.pid)]:  # workers: sessions of their own
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait()
    return logged


def trained(config: Path) -> Path:
    return config.parent / "runs" / "trained" / "train" / "tuned"


# one process is also killed and resumed by test_training's kill test, so CI runs two
PROCESS_COUNTS = [pytest.param(1, marks=pytest.mark.heavy), 2]


def adapter_bytes(config: Path) -> bytes:
    return (trained(config) / "adapter" / "adapter_model.safetensors").read_bytes()


def log_rows(config: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (trained(config) / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def uninterrupted(
    fixture_data: Path, tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[int], bytes]:
    """The adapter of the 40-step training run straight through, per process count, trained
    when a test first asks (CI runs the two-process tests only)."""

    @functools.cache
    def adapter(processes: int) -> bytes:
        folder = tmp_path_factory.mktemp(f"straight{processes}")
        config = write_config(folder, fixture_data, [checkpointed(tiny_llama)])
        done = train(config, processes)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "resuming" not in done.stderr
        return adapter_bytes(config)

    return adapter


@pytest.mark.parametrize("processes", PROCESS_COUNTS)
def test_killed_at_a_random_step_resumes_to_the_same_adapter(
    processes: int,
    uninterrupted: Callable[[int], bytes],
    fixture_data: Path,
    tiny_llama: Path,
    tmp_path: Path,
) -> None:
    step = random.randint(7, 33)  # after the first checkpoint, before the last
    config = write_config(tmp_path, fixture_data, [checkpointed(tiny_llama)])
    killed_at = kill_at_step(config, processes, step)
    work = trained(config).with_name(".tuned.work")
    sealed = work.glob("checkpoint-*/sealed.json")
    checkpoint = max(int(p.parent.name.split("-")[1]) for p in sealed)
    # a step is logged before its checkpoint is saved: a kill right after a logged step 30 may
    # find checkpoint-30 unsealed, and the resume takes checkpoint-25
    assert killed_at - 5 <= checkpoint <= killed_at, f"killed at step {killed_at}"

    resumed = train(config, processes)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from checkpoint-{checkpoint} (step {checkpoint})" in resumed.stderr
    rows = log_rows(config)
    assert {"step": checkpoint, "resumed": True} in rows
    assert [row["step"] for row in rows if "loss" in row] == list(range(1, STEPS + 1))
    summary = json.loads((trained(config) / "train_config.json").read_text())
    assert summary["resumed_from_step"] == checkpoint and summary["world_size"] == processes
    assert adapter_bytes(config) == uninterrupted(processes), f"killed at step {killed_at}"
    assert not list(trained(config).glob("checkpoint-*"))  # removed once finished


@pytest.mark.parametrize("processes", PROCESS_COUNTS)
def test_a_kill_during_a_checkpoint_save_leaves_a_resumable_state(
    processes: int,
    uninterrupted: Callable[[int], bytes],
    fixture_data: Path,
    tiny_llama: Path,
    tmp_path: Path,
) -> None:
    """Two processes: rank 1 dies before writing its RNG state while rank 0 has written its
    whole part, so only the barrier before the seal keeps checkpoint-15 from counting."""
    config = write_config(tmp_path, fixture_data, [checkpointed(tiny_llama)])
    killed = train(config, processes, KILL_DURING_SAVE="3", KILL_RANK=str(processes - 1))
    assert killed.returncode != 0  # the save at step 15
    work = trained(config).with_name(".tuned.work")
    if processes == 1:
        assert killed.returncode == -signal.SIGKILL
        assert (work / "checkpoint-15" / "adapter_model.safetensors").is_file()
    assert (work / "checkpoint-10" / "sealed.json").is_file()
    assert not (work / "checkpoint-15" / "sealed.json").exists()

    resumed = train(config, processes)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from checkpoint-10 (step 10)" in resumed.stderr
    assert adapter_bytes(config) == uninterrupted(processes)


@pytest.mark.parametrize("processes", PROCESS_COUNTS)
def test_a_changed_learning_rate_ignores_the_old_checkpoints(
    processes: int, fixture_data: Path, tiny_llama: Path, tmp_path: Path
) -> None:
    config = write_config(tmp_path, fixture_data, [checkpointed(tiny_llama)])
    kill_at_step(config, processes, 12)
    assert list(trained(config).with_name(".tuned.work").glob("checkpoint-*/sealed.json"))
    changed = write_config(tmp_path, fixture_data, [checkpointed(tiny_llama, learning_rate=0.02)])
    again = train(changed, processes)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming" not in again.stderr
    rows = log_rows(changed)
    assert not any(row.get("resumed") for row in rows)
    assert rows[0]["step"] == 1 and rows[0]["learning_rate"] == pytest.approx(0.02)


def test_best_checkpoint_by_validation_rouge1_is_the_one_evaluated(
    fixture_data: Path, tiny_llama: Path, tmp_path: Path
) -> None:
    entry = checkpointed(
        tiny_llama,
        eval_steps=10,
        eval_limit=8,
        eval_metric="rouge1",
        best_by="metric",
        save_steps=10,
        save_total_limit=4,
        keep_checkpoints=True,
    )
    config = write_config(tmp_path, fixture_data, [entry])
    assert main(["run", str(config)]) == 0
    evaluations = [row for row in log_rows(config) if "validation" in row]
    assert [row["step"] for row in evaluations] == [10, 20, 30, 40]
    assert all(set(row["validation"]) == {"loss", "rouge1"} for row in evaluations)
    scores = [row["validation"]["rouge1"] for row in evaluations]
    best = evaluations[scores.index(max(scores))]["step"]  # the first of equal bests
    summary = json.loads((trained(config) / "train_config.json").read_text())
    assert summary["best"] == {"step": best, "metric": "eval_rouge1", "value": max(scores)}
    kept = trained(config) / f"checkpoint-{best}" / "adapter_model.safetensors"
    assert adapter_bytes(config) == kept.read_bytes()
    run = tmp_path / "runs" / "trained"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["models"]["tuned"]["adapter"] == "train/tuned/adapter"
    report = (run / "report.html").read_text()
    assert "validation rouge1" in report and f"best checkpoint (step {best})" in report


def test_early_stopping_ends_after_patience_evaluations_without_improvement(
    fixture_data: Path, tiny_llama: Path, tmp_path: Path
) -> None:
    entry = checkpointed(
        tiny_llama,
        max_steps=60,
        eval_steps=5,
        eval_limit=8,
        save_steps=5,
        best_by="loss",
        early_stopping_patience=2,
        learning_rate=0.05,
    )
    config = write_config(tmp_path, fixture_data, [entry])
    done = train(config, 1)
    assert done.returncode == 0, done.stderr[-3000:]
    losses = [(r["step"], r["validation"]["loss"]) for r in log_rows(config) if "validation" in r]
    best, waited, stop = float("inf"), 0, 60
    for step, loss in losses:
        best, waited = (loss, 0) if loss < best else (best, waited + 1)
        if waited == 2:
            stop = step
            break
    summary = json.loads((trained(config) / "train_config.json").read_text())
    assert summary["steps"] == stop == losses[-1][0] < 60, losses


ACCELERATE_CONFIGS = sorted((ROOT / "configs" / "accelerate").glob("*.yaml"))


def test_every_shipped_accelerate_config_has_only_keys_accelerate_knows() -> None:
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.commands.launch import launch_command_parser

    options = {action.dest for action in launch_command_parser()._actions}
    assert {p.stem for p in ACCELERATE_CONFIGS} == {
        "ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"
    }  # fmt: skip
    for path in ACCELERATE_CONFIGS:
        ClusterConfig.from_yaml_file(path)  # unknown top-level keys raise
        settings = yaml.safe_load(path.read_text())
        for section in ("fsdp_config", "deepspeed_config"):
            unknown = set(settings.get(section, {})) - options
            assert not unknown, f"{path.name}: {section} keys accelerate ignores: {unknown}"
        readme_command = f"--config_file configs/accelerate/{path.name}"
        assert readme_command in path.read_text()  # the one command that uses it


def test_the_ddp_config_runs_a_two_step_training_on_a_cpu(
    fixture_data: Path, tiny_llama: Path, tmp_path: Path
) -> None:
    config = write_config(tmp_path, fixture_data, [lora_entry(tiny_llama, max_steps=2)])
    launch = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file",
        str(ROOT / "configs" / "accelerate" / "ddp.yaml"), "--num_processes=2",
        "-m", "medharness", "train", str(config),
    ]  # fmt: skip
    done = subprocess.run(launch, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((trained(config) / "train_config.json").read_text())
    assert summary["steps"] == 2 and summary["world_size"] == 2
    assert summary["launch"]["distributed_type"] == "MULTI_CPU"
    assert summary["launch"]["accelerate_settings"]["ACCELERATE_MIXED_PRECISION"] == "no"


def test_medqa_training_validates_accuracy_on_the_dev_questions(
    fixture_data: Path, tiny_llama: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    subprocess.run(["cp", "-r", str(fixture_data), str(data)], check=True)
    dev = (data / "medqa" / "us_4opt_dev.jsonl").read_text().splitlines()
    train_rows = [json.loads(line) for line in dev]
    for row in train_rows:
        row["question"] = f"(train) {row['question']}"
    (data / "medqa" / "us_4opt_train.jsonl").write_text(
        "".join(json.dumps(row) + "\n" for row in train_rows)
    )
    entry = checkpointed(
        tiny_llama, data="medqa_train", max_steps=10, eval_steps=5, eval_metric="acc"
    )
    config = write_config(tmp_path, data, [entry])
    assert main(["train", str(config)]) == 0
    evaluations = [row["validation"] for row in log_rows(config) if "validation" in row]
    assert len(evaluations) == 2 and all(set(v) == {"loss", "acc"} for v in evaluations)
    questions = min(len(dev), 64)  # eval_limit: the first 64 dev questions, each right or wrong
    assert all(abs(v["acc"] * questions - round(v["acc"] * questions)) < 1e-9 for v in evaluations)


@pytest.fixture(scope="module")
def resumable(
    fixture_data: Path, tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The runs folder of a finished 4-step training that kept its checkpoints; moved back to
    its work folder, it is what a training killed after step 4 leaves to resume."""
    folder = tmp_path_factory.mktemp("resumable")
    entry = checkpointed(tiny_llama, max_steps=4, save_steps=2, keep_checkpoints=True)
    config = write_config(folder, fixture_data, [entry])
    assert main(["train", str(config)]) == 0
    return config


def resume_spoiled(
    resumable: Path,
    tmp_path: Path,
    spoil: Callable[[Path], None],
    capsys: pytest.CaptureFixture[str],
) -> tuple[int, list[str]]:
    """Resume a copy of the training from its newest checkpoint, spoilt by ``spoil``: the
    exit code and the lines on stderr."""
    config = tmp_path / "config.yaml"
    settings = yaml.safe_load(resumable.read_text())
    settings["output_dir"] = str(tmp_path / "runs")
    config.write_text(yaml.safe_dump(settings))
    shutil.copytree(resumable.parent / "runs", tmp_path / "runs")
    work = trained(config).with_name(".tuned.work")
    trained(config).rename(work)
    (work / "train_config.json").unlink()  # unfinished, as a kill leaves it
    spoil(work / "checkpoint-4")
    capsys.readouterr()
    code = main(["train", str(config)])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err[-3000:]
    return code, [line for line in err.splitlines() if line.startswith("medharness: ")]


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def reshaped(checkpoint: Path, change: Callable[[str, Any], tuple[str, Any]]) -> None:
    """The checkpoint's adapter rewritten tensor by tensor: another model's, or another
    rank's."""
    from safetensors.torch import load_file, save_file

    path = checkpoint / "adapter_model.safetensors"
    save_file(dict(change(name, tensor) for name, tensor in load_file(path).items()), path)


class RunsCode:
    """A pickle that, were it loaded without ``weights_only``, would leave a file behind."""

    def __init__(self, proof: Path) -> None:
        self.proof = proof

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.proof,))


def pickled_optimizer(checkpoint: Path) -> None:
    import torch

    torch.save({"state": RunsCode(checkpoint.parent / "PWNED")}, checkpoint / "optimizer.pt")


def double_rank(name: str, tensor: Any) -> tuple[str, Any]:
    import torch

    if "lora_A" in name:
        return name, torch.cat([tensor, tensor])
    if "lora_B" in name:
        return name, torch.cat([tensor, tensor], dim=1)
    return name, tensor


SPOILS: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated adapter": (lambda c: truncate(c / "adapter_model.safetensors"), "adapter_model"),
    "missing adapter": (lambda c: (c / "adapter_model.safetensors").unlink(), "adapter_model"),
    "missing optimizer": (lambda c: (c / "optimizer.pt").unlink(), "optimizer.pt"),
    "truncated scheduler": (lambda c: truncate(c / "scheduler.pt"), "scheduler.pt"),
    "torn trainer state": (lambda c: truncate(c / "trainer_state.json"), "trainer_state.json"),
    "another model's adapter": (
        lambda c: reshaped(c, lambda n, t: (n.replace("q_proj", "up_proj"), t)),
        "adapter_model",
    ),
    "another LoRA rank": (lambda c: reshaped(c, double_rank), "another shape"),
    "pickled optimizer": (pickled_optimizer, "optimizer.pt"),
    "pickled weights": (
        lambda c: (c / "adapter_model.bin").write_bytes(b"pickle"),
        "adapter_model.bin",
    ),
}


@pytest.mark.parametrize("spoil", SPOILS)
def test_a_spoilt_checkpoint_is_one_line_naming_the_file_and_no_pickle_runs(
    resumable: Path, tmp_path: Path, spoil: str, capsys: pytest.CaptureFixture[str]
) -> None:
    change, says = SPOILS[spoil]
    code, lines = resume_spoiled(resumable, tmp_path, change, capsys)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("medharness: error: ") and "checkpoint-4" in lines[0], lines
    assert says in lines[0], lines
    assert not list(tmp_path.rglob("PWNED"))


def test_an_unspoilt_checkpoint_passes_the_checks_and_resumes(
    resumable: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines = resume_spoiled(resumable, tmp_path, lambda checkpoint: None, capsys)
    assert code == 0, lines
    assert (
        json.loads((trained(tmp_path / "config.yaml") / "train_config.json").read_text())[
            "resumed_from_step"
        ]
        == 4
    )
