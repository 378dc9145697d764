"""benchmarks/gpu_training.py stays runnable with one command: its CPU smoke mode trains the
recipes a CPU can run through the real recipe code and says why it skips the others."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_gpu_training_benchmark_runs_its_cpu_smoke_mode(
    fixture_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "figures.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "gpu_training.py"),
            "--smoke",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=tmp_path,
        env={**os.environ, "MEDHARNESS_DATA_DIR": str(fixture_data)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text())
    recipes = {row["recipe"]: row for row in figures["recipes"]}
    for ran in ("lora_bf16", "full_gc"):  # fp32 on a CPU
        assert recipes[ran]["steps"] == 2 and recipes[ran]["tokens_per_s"] > 0
    assert recipes["full_gc"]["parameters"] > 0
    assert "CUDA" in recipes["qlora_nf4"]["skipped"] and "CUDA" in recipes["packing"]["skipped"]
    assert [row["precision"] for row in figures["builtin_precision"]] == ["fp32"]
    assert "| lora_bf16 | 2 |" in done.stdout


def test_mfu_counts_the_parameters_a_llama_of_that_shape_has() -> None:
    import importlib.util

    from transformers import LlamaConfig, LlamaForCausalLM

    spec = importlib.util.spec_from_file_location(
        "gpu_training", ROOT / "benchmarks" / "gpu_training.py"
    )
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    for tied in (True, False):
        config = LlamaConfig(
            **{**script.SMOKE_SHAPE, "vocab_size": 1000, "tie_word_embeddings": tied}
        )
        model = LlamaForCausalLM(config)
        assert script.sum_parameters(config) == sum(p.numel() for p in model.parameters())
