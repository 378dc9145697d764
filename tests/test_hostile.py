"""Hostile and careless inputs: no code runs that the user did not allow, nothing outside
the output folder is touched, no wrong number passes silently. Each case says what a
demanding user expects and checks it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from medharness.cli import main

MARKER_CODE = """
from pathlib import Path
Path({marker!r}).write_text("custom code ran")
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
class CustomTokenizer(PreTrainedTokenizerFast):
    pass
class CustomConfig(LlamaConfig):
    model_type = "custom_llama"
class CustomModel(LlamaForCausalLM):
    config_class = CustomConfig
"""


def run_cli(args: list[str], cwd: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "medharness", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize("where", ["tokenizer", "model"])
def test_custom_code_in_a_model_folder_never_runs_even_when_stdin_says_yes(
    tiny_llama: Path, data_env: Path, tmp_path: Path, where: str
) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_llama, folder)
    marker = tmp_path / "pwned"
    (folder / "custom_code.py").write_text(MARKER_CODE.format(marker=str(marker)))
    # classes transformers does not know, so only the folder's code could build them
    if where == "tokenizer":
        name, changes = (
            "tokenizer_config.json",
            {
                "tokenizer_class": "CustomTokenizer",
                "auto_map": {"AutoTokenizer": ["custom_code.CustomTokenizer", None]},
            },
        )
    else:
        name, changes = (
            "config.json",
            {
                "model_type": "custom_llama",
                "auto_map": {
                    "AutoConfig": "custom_code.CustomConfig",
                    "AutoModelForCausalLM": "custom_code.CustomModel",
                },
            },
        )
    config = json.loads((folder / name).read_text())
    (folder / name).write_text(json.dumps({**config, **changes}))
    result = run_cli(
        ["eval", "--model", str(folder), "--tasks", "medqa_4opt", "--limit", "2", "--out", "runs"],
        tmp_path,
        stdin="y\ny\ny\n",
    )
    assert not marker.exists(), "code from the model folder ran"
    assert result.returncode in (0, 2), result.stderr[-2000:]
    if result.returncode == 2:
        errors = [line for line in result.stderr.splitlines() if "medharness: error" in line]
        assert len(errors) == 1 and "never runs a model's own code" in errors[0], result.stderr
        assert result.stderr.strip().splitlines()[-1] == errors[0]


def pickled_adapter(tiny_llama: Path, target: Path) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    peft_model.save_pretrained(target, safe_serialization=False)
    assert (target / "adapter_model.bin").is_file()
    return target


def test_an_adapter_of_pickles_is_refused_unless_allowed(
    tiny_llama: Path, data_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    adapter = pickled_adapter(tiny_llama, tmp_path / "adapter")
    args = ["eval", "--model", str(tiny_llama), "--adapter", str(adapter), "--tasks", "medqa_4opt"]
    args += ["--limit", "2", "--out", str(tmp_path / "runs")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "holds only pickled weights (adapter_model.bin)" in err and "allow_pickle" in err
    assert main([*args, "--allow-pickle"]) == 0


def test_training_on_an_adapter_of_pickles_is_refused(
    tiny_llama: Path, fixture_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    adapter = pickled_adapter(tiny_llama, tmp_path / "adapter")
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "t",
                "data_dir": str(fixture_data),
                "models": [
                    {
                        "name": "m",
                        "model": str(tiny_llama),
                        "adapter": str(adapter),
                        "train": {"max_steps": 1},
                    }
                ],
                "tasks": [{"name": "medquad_gen", "limit": 2}],
            }
        )
    )
    assert main(["run", str(config), "--out", str(tmp_path / "runs")]) == 2
    assert "holds only pickled weights" in capsys.readouterr().err
