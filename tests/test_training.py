"""Training on the tiny random Llama and fixture data: every recipe path end to end, the
saved adapter against plain PEFT, reuse of finished trainings, sweeps, and the data rules."""

from __future__ import annotations

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

from medharness.cli import main
from medharness.tasks.medquad import load_pairs, normalise_question, split_pairs
from medharness.trainers.data import medqa_dev_examples, medquad_examples
from medharness.trainers.spec import SweepSpec, TrainSpec

DISCLAIMER = "Disclaimer: Consult a healthcare professional for medical advice."


def write_config(tmp: Path, data: Path, models: list[dict[str, Any]], **extra: Any) -> Path:
    config = {
        "name": "trained",
        "data_dir": str(data),
        "output_dir": str(tmp / "runs"),
        "bootstrap_resamples": 200,
        "models": models,
        "tasks": [{"name": "medquad_gen", "limit": 4}],
        "generation": {"max_new_tokens": 6},
        **extra,
    }
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def lora_entry(tiny: Path, **train: Any) -> dict[str, Any]:
    settings = {"max_steps": 8, "batch_size": 4, "logging_steps": 1, "learning_rate": 0.01}
    return {"name": "tuned", "model": str(tiny), "batch_size": 1, "train": settings | train}


def test_medquad_training_data_never_holds_a_test_question(fixture_data: Path) -> None:
    training = medquad_examples(fixture_data, None, DISCLAIMER)
    pairs, _ = load_pairs(fixture_data / "medquad")
    test = {normalise_question(pair.question) for pair in split_pairs(pairs)["test"]}
    questions = [example["prompt"][0]["content"] for example in training.examples]
    assert questions and test
    assert not {normalise_question(q) for q in questions} & test
    answers = [example["completion"][0]["content"] for example in training.examples]
    assert all(answer.endswith("\n\n" + DISCLAIMER) for answer in answers)


def test_medqa_dev_examples_are_in_the_scoring_format(fixture_data: Path) -> None:
    training = medqa_dev_examples(fixture_data, 3)
    assert len(training.examples) == 3 and "DEV" in training.description
    first = training.examples[0]
    assert first["prompt"].startswith("Question: (dev)") and first["prompt"].endswith("Answer:")
    assert first["completion"] in {" A", " B", " C", " D"}


def test_sweep_grid_and_points_expand_to_specs() -> None:
    grid = SweepSpec(grid={"learning_rate": [1e-4, 2e-4], "lora_r": [8, 16]})
    assert len(grid.combinations()) == 4
    spec = TrainSpec(sweep=SweepSpec(points=[{"learning_rate": 5e-5, "lora_r": 32}]))
    point = spec.with_point(spec.sweep.combinations()[0])  # type: ignore[union-attr]
    assert (point.learning_rate, point.lora.r, point.sweep) == (5e-5, 32, None)
    with pytest.raises(ValueError, match="cannot sweep 'batch'"):
        SweepSpec(points=[{"batch": 2}])


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ({"recipe": "qlora"}, "recipe qlora needs a CUDA GPU"),
        ({"precision": "fp16"}, "precision fp16 needs a CUDA GPU"),
        ({"data": "medqa_dev", "disclaimer": "x"}, "disclaimer applies to MedQuAD"),
        ({"sweep": {"points": [{"batch_size": 2}]}}, "cannot sweep 'batch_size'"),
        ({"lora": {"rank": 8}}, "train.lora.rank: unknown key"),
        ({"best_by": "loss"}, "best_by needs eval_steps"),
        ({"eval_steps": 5, "eval_metric": "acc"}, "eval_metric for data: medquad is ROUGE"),
        ({"eval_steps": 5, "best_by": "metric"}, "best_by: metric needs eval_metric"),
        ({"eval_steps": 4, "save_steps": 6, "best_by": "loss"}, "multiple of eval_steps"),
        ({"eval_steps": 5, "early_stopping_patience": 2}, "needs best_by"),
        ({"save_total_limit": 1}, "save_total_limit: Input should be greater than or equal to 2"),
    ],
)
def test_bad_training_settings_fail_before_any_work(
    train: dict[str, Any],
    message: str,
    fixture_data: Path,
    tiny_llama: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_config(tmp_path, fixture_data, [lora_entry(tiny_llama, **train)])
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("medharness: error:") and message in err[0]
    assert not (tmp_path / "runs").exists()


@pytest.fixture(scope="module")
def trained_run(
    fixture_data: Path, tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    tmp = tmp_path_factory.mktemp("trained")
    base = {"name": "base", "model": str(tiny_llama), "batch_size": 1}
    config = write_config(tmp, fixture_data, [base, lora_entry(tiny_llama, disclaimer=DISCLAIMER)])
    assert main(["run", str(config)]) == 0
    return tmp / "runs" / "trained"


def test_train_then_evaluate_writes_log_adapter_and_report(trained_run: Path) -> None:
    folder = trained_run / "train" / "tuned"
    log = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == list(range(1, 9))
    assert {"epoch", "loss", "learning_rate", "grad_norm", "tokens_per_s"} <= set(log[0])
    assert log[-1]["loss"] < log[0]["loss"]  # a high learning rate on repeated fixture answers
    assert (folder / "adapter" / "adapter_config.json").is_file()
    assert not list((folder / "adapter").glob("*.bin"))  # no pickles in what we ship
    summary = json.loads((folder / "train_config.json").read_text())
    assert summary["steps"] == 8 and summary["train"]["disclaimer"] == DISCLAIMER
    manifest = json.loads((trained_run / "manifest.json").read_text())
    assert manifest["models"]["tuned"]["trained"]["key"] == summary["key"]
    assert manifest["models"]["tuned"]["adapter"] == "train/tuned/adapter"
    results = json.loads((trained_run / "results.json").read_text())["results"]
    assert "disclaimer_rate" in results["tuned"]["medquad_gen"]["metrics"]
    html = (trained_run / "report.html").read_text()
    assert "Training curves" in html and "tuned" in html and "base" in html


def test_saved_adapter_reproduces_the_tuned_outputs_with_plain_peft(
    trained_run: Path, tiny_llama: Path
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    model = PeftModel.from_pretrained(base, str(trained_run / "train" / "tuned" / "adapter"))
    model.eval()
    inputs = {
        row["doc_id"]: row["prompt"]
        for row in map(json.loads, (trained_run / "inputs" / "medquad_gen.jsonl").open())
    }
    logged = (trained_run / "samples" / "tuned" / "medquad_gen.jsonl").read_text().splitlines()
    for row in map(json.loads, logged):
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": inputs[row["doc_id"]]}],
            tokenize=False,
            add_generation_prompt=True,
        )
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=6, do_sample=False)
        text = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
        assert text.strip() == row["prediction"]


def test_rerun_reuses_the_finished_training(
    trained_run: Path, fixture_data: Path, tiny_llama: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    adapter = trained_run / "train" / "tuned" / "adapter" / "adapter_model.safetensors"
    before = adapter.read_bytes()
    config = trained_run.parent.parent / "config.yaml"
    capsys.readouterr()
    assert main(["run", str(config)]) == 0
    err = capsys.readouterr().err
    assert "reusing the finished training" in err and "training (lora)" not in err
    assert adapter.read_bytes() == before


def test_train_command_then_run_trains_once(
    fixture_data: Path, tiny_llama: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, fixture_data, [lora_entry(tiny_llama, max_steps=2)])
    assert main(["train", str(config)]) == 0
    run_dir = tmp_path / "runs" / "trained"
    assert (run_dir / "train" / "tuned" / "train_config.json").is_file()
    assert not (run_dir / "results.json").exists()  # trained, not evaluated
    capsys.readouterr()
    assert main(["run", str(config)]) == 0
    assert "training (lora)" not in capsys.readouterr().err
    assert (run_dir / "results.json").is_file()


def test_full_recipe_on_medqa_dev_evaluates_on_test(
    fixture_data: Path, tiny_llama: Path, tmp_path: Path
) -> None:
    entry = {
        "name": "full",
        "model": str(tiny_llama),
        "train": {"recipe": "full", "data": "medqa_dev", "max_steps": 2, "batch_size": 2},
    }
    config = write_config(tmp_path, fixture_data, [entry], tasks=["medqa_4opt"])
    assert main(["run", str(config)]) == 0
    run_dir = tmp_path / "runs" / "trained"
    assert (run_dir / "train" / "full" / "model" / "model.safetensors").is_file()
    summary = json.loads((run_dir / "train" / "full" / "train_config.json").read_text())
    assert "DEV" in summary["data"] and summary["trainable_parameters"] > 10_000
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["models"]["full"]["model"] == "train/full/model"
    assert json.loads((run_dir / "results.json").read_text())["results"]["full"]["medqa_4opt"]


def test_sweep_trains_each_point_and_keeps_the_best(
    fixture_data: Path, tiny_llama: Path, tmp_path: Path
) -> None:
    points = [
        {"learning_rate": 1e-4, "lora_r": 16},
        {"learning_rate": 2e-2, "lora_r": 8},
        {"learning_rate": 5e-5, "lora_r": 32},
    ]
    entry = lora_entry(tiny_llama, max_steps=3, sweep={"points": points, "validation_limit": 3})
    config = write_config(tmp_path, fixture_data, [entry])
    assert main(["run", str(config)]) == 0
    folder = tmp_path / "runs" / "trained" / "train" / "tuned"
    sweep = json.loads((folder / "sweep.json").read_text())
    assert [p["params"] for p in sweep["points"]] == points
    values = [p["value"] for p in sweep["points"]]
    assert sweep["best"] == values.index(max(values)) and sweep["metric"] == "rouge1"
    for index, point in enumerate(points):
        saved = json.loads((folder / "sweep" / str(index) / "train_config.json").read_text())
        assert saved["train"]["learning_rate"] == point["learning_rate"]
        assert saved["train"]["lora"]["r"] == point["lora_r"]
    manifest = json.loads((tmp_path / "runs" / "trained" / "manifest.json").read_text())
    assert manifest["models"]["tuned"]["adapter"] == f"train/tuned/sweep/{sweep['best']}/adapter"
    assert "Hyper-parameter sweep" in (tmp_path / "runs" / "trained" / "report.html").read_text()


def test_kill_during_training_resumes_to_identical_results(
    fixture_data: Path, tiny_llama: Path, tmp_path: Path
) -> None:
    entry = lora_entry(tiny_llama, max_steps=120)
    reference = write_config(tmp_path / "reference", fixture_data, [entry])
    assert main(["run", str(reference)]) == 0
    config = write_config(tmp_path / "killed", fixture_data, [entry])
    staging = tmp_path / "killed" / "runs" / ".trained.partial"
    log = staging / "train" / ".tuned.work" / "log.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "medharness", "run", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and process.poll() is None:
            if log.is_file() and len(log.read_text().splitlines()) >= 5:
                break
            time.sleep(0.05)
        assert process.poll() is None, "the run ended before it could be killed in training"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    assert not (staging / "train" / "tuned").exists()  # nothing that looks finished
    assert main(["run", str(config)]) == 0
    runs = [tmp_path / name / "runs" / "trained" for name in ("reference", "killed")]
    results = [json.loads((run / "results.json").read_text()) for run in runs]
    assert results[0] == results[1]
    adapters = [run / "train/tuned/adapter/adapter_model.safetensors" for run in runs]
    assert adapters[0].read_bytes() == adapters[1].read_bytes()


def test_two_process_accelerate_launch_saves_one_adapter(
    fixture_data: Path, tiny_llama: Path, tmp_path: Path
) -> None:
    config = write_config(tmp_path, fixture_data, [lora_entry(tiny_llama, max_steps=4)])
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",  # accelerate's name for torchrun DDP; on a CPU it runs gloo
        "--num_processes=2",
        "--num_machines=1",
        "--mixed_precision=no",
        "--dynamo_backend=no",
        "-m",
        "medharness",
        "train",
        str(config),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    train_dir = tmp_path / "runs" / "trained" / "train"
    assert [p.name for p in train_dir.iterdir()] == ["tuned"]  # no leftover work folders
    summary = json.loads((train_dir / "tuned" / "train_config.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 4
    assert (train_dir / "tuned" / "adapter" / "adapter_model.safetensors").is_file()


def test_long_answers_are_shortened_so_the_disclaimer_survives_truncation(
    fixture_data: Path, tiny_llama: Path
) -> None:
    from transformers import AutoTokenizer

    from medharness.trainers.sft import fit_disclaimer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    training = medquad_examples(fixture_data, None, DISCLAIMER)
    long_answer = {"role": "assistant", "content": "word " * 400 + "\n\n" + DISCLAIMER}
    examples = [{**training.examples[0], "completion": [long_answer]}, training.examples[1]]
    fitted = fit_disclaimer(examples, DISCLAIMER, tokenizer, max_length=200)
    for before, after in zip(examples, fitted, strict=True):
        text = tokenizer.apply_chat_template(after["prompt"] + after["completion"], tokenize=False)
        length = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        assert after["completion"][0]["content"].endswith("\n\n" + DISCLAIMER)
        assert length <= 200 or after == before  # short examples are left as they were
    assert fitted[0] != examples[0] and fitted[1] == examples[1]


def test_label_positions_loss_equals_trls_own(
    fixture_data: Path, tiny_llama: Path, tmp_path: Path
) -> None:
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from medharness.trainers.sft import LabelPositionsSFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_llama),
        LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear"),
    )
    trainer = LabelPositionsSFTTrainer(
        model=model,
        args=SFTConfig(
            output_dir=str(tmp_path),
            per_device_train_batch_size=4,
            max_length=256,
            use_cpu=True,
            bf16=False,
            report_to="none",
        ),
        train_dataset=Dataset.from_list(medquad_examples(fixture_data, 8, None).examples),
        processing_class=tokenizer,
    )
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()
    ours = trainer.compute_loss(trainer.model, dict(batch))
    theirs = SFTTrainer.compute_loss(trainer, trainer.model, dict(batch))
    assert (batch["labels"] == -100).any() and (batch["labels"] != -100).any()
    assert torch.allclose(ours, theirs, atol=1e-5), (float(ours), float(theirs))
