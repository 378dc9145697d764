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

# the ids of docs/errors.md's rows these tests cover
DOCUMENTED = {
    "model-custom-code",
    "pickled-adapter",
    "foreign-target",
    "planted-link",
    "concurrent-run",
}

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


def fake_config(tmp_path: Path, fake_script: Path, name: str = "demo") -> Path:
    config = tmp_path / f"{name}.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": name,
                "models": [{"name": "m", "model": f"fake:{fake_script}"}],
                "tasks": [{"name": "medqa_4opt", "limit": 3}],
            }
        )
    )
    return config


def tree(root: Path, skip: Path | None = None) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` (not following links) with its size and mtime."""
    found = {}
    for path in sorted(root.rglob("*")):
        if skip is not None and (path == skip or skip in path.parents):
            continue
        info = path.lstat()
        found[str(path.relative_to(root))] = (info.st_size, info.st_mtime_ns)
    return found


def test_a_folder_at_the_target_that_is_not_a_run_is_refused_and_left_alone(
    data_env: Path, fake_script: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    someone = tmp_path / "runs" / "demo"
    someone.mkdir(parents=True)
    (someone / "thesis.tex").write_text("years of work")
    config = fake_config(tmp_path, fake_script)
    before = tree(tmp_path)
    code = main(["run", str(config), "--out", str(tmp_path / "runs")])
    assert code == 2
    assert "exists and is not a medharness run directory" in capsys.readouterr().err
    assert tree(tmp_path) == before


@pytest.mark.parametrize("where", [".demo.partial", "demo"])
def test_a_planted_link_at_the_staging_or_target_path_is_never_written_through(
    data_env: Path,
    fake_script: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    where: str,
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / where).symlink_to(elsewhere)
    code = main(["run", str(fake_config(tmp_path, fake_script)), "--out", str(tmp_path / "runs")])
    assert code == 2
    assert "is a symbolic link" in capsys.readouterr().err
    assert list(elsewhere.iterdir()) == []
    assert (tmp_path / "runs" / where).is_symlink()


def test_a_second_process_on_the_same_output_is_refused(
    data_env: Path, fake_script: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import fcntl
    import os

    from medharness.core.folders import LOCK, make_owned_folder

    staging = tmp_path / "runs" / ".demo.partial"
    make_owned_folder(staging)
    handle = os.open(staging / LOCK, os.O_RDWR | os.O_CREAT)
    fcntl.flock(handle, fcntl.LOCK_EX)  # as a first process writing the run would hold it
    try:
        code = main(
            ["run", str(fake_config(tmp_path, fake_script)), "--out", str(tmp_path / "runs")]
        )
    finally:
        os.close(handle)
    assert code == 2
    assert "another medharness process is writing" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "demo").exists()


def test_a_run_writes_nothing_outside_its_output_folder(
    data_env: Path, fake_script: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = fake_config(tmp_path, fake_script)
    (tmp_path / "runs").mkdir()
    before = tree(tmp_path, skip=tmp_path / "runs")
    assert main(["run", str(config), "--out", str(tmp_path / "runs")]) == 0
    assert main(["run", str(config), "--out", str(tmp_path / "runs")]) == 0  # replaces its own
    assert tree(tmp_path, skip=tmp_path / "runs") == before
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["demo"]
