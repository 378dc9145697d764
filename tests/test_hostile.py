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
    "bad-gold-letter",
    "gold-text-mismatch",
    "empty-required-text",
    "duplicate-sample-ids",
    "bad-checksum-line",
    "non-finite-number",
    "edited-aggregate",
    "corrupt-weights",
    "weights-do-not-fit",
    "unknown-peft-type",
    "yaml-too-deep",
    "output-is-a-folder",
    "yaml-duplicate-key",
    "config-is-a-folder",
    "pickle-with-code",
    "run-file-not-utf8",
    "fake-script-invalid",
    "policy-off-scale",
    "data-root-is-a-file",
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


def only_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one line a refused input prints (there must be exactly one)."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


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


def fresh_data(tmp_path: Path) -> Path:
    from conftest import write_fixture_data

    return write_fixture_data(tmp_path / "data")


def edit_jsonl(path: Path, line: int, change: dict[str, object]) -> None:
    rows = [json.loads(text) for text in path.read_text().splitlines()]
    rows[line - 1].update(change)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def eval_task(data: Path, fake_script: Path, task: str, out: Path) -> int:
    return main(
        ["eval", "--model", f"fake:{fake_script}", "--tasks", task, "--data-dir", str(data),
         "--out", str(out)]
    )  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"answer_idx": ""},
            "us_4opt_test.jsonl:3: answer_idx: '' is not one of the option letters",
        ),
        ({"answer_idx": "AB"}, ":3: answer_idx: 'AB' is not one of the option letters"),
        ({"answer_idx": "E"}, ":3: answer_idx: 'E' is not one of the option letters A, B, C, D"),
        ({"answer_idx": None}, ":3: answer_idx: None is not one of the option letters"),
        ({"answer": "no such option"}, ":3: answer: 'no such option' is not option"),
        ({"question": "  "}, ":3: question: must be non-empty text"),
        ({"options": {"A": "a", "B": "", "C": "c", "D": "d"}}, ":3: options.B: must be non-empty"),
    ],
)
def test_a_medqa_row_with_a_bad_gold_or_text_is_one_line_naming_file_row_and_column(
    fake_script: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: dict[str, object],
    message: str,
) -> None:
    data = fresh_data(tmp_path)
    edit_jsonl(data / "medqa/us_4opt_test.jsonl", 3, change)
    assert eval_task(data, fake_script, "medqa_4opt", tmp_path / "runs") == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs" / "eval-fake").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"cop": 0}, "dev.jsonl:2: cop: 0 is not 1, 2, 3 or 4"),
        ({"cop": True}, "dev.jsonl:2: cop: True is not 1, 2, 3 or 4"),
        ({"cop": "x"}, "dev.jsonl:2: cop: 'x' is not 1, 2, 3 or 4"),
        ({"opc": None}, "dev.jsonl:2: opc: must be non-empty text"),
        ({"question": ""}, "dev.jsonl:2: question: must be non-empty text"),
    ],
)
def test_a_medmcqa_row_with_a_bad_gold_or_text_is_refused(
    fake_script: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: dict[str, object],
    message: str,
) -> None:
    data = fresh_data(tmp_path)
    edit_jsonl(data / "medmcqa/dev.jsonl", 2, change)
    assert eval_task(data, fake_script, "medmcqa", tmp_path / "runs") == 2
    assert message in capsys.readouterr().err


def test_duplicate_sample_ids_are_refused_not_overwritten(
    fake_script: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = fresh_data(tmp_path)
    first = json.loads((data / "medmcqa/dev.jsonl").read_text().splitlines()[0])
    edit_jsonl(data / "medmcqa/dev.jsonl", 2, {"id": first["id"]})
    assert eval_task(data, fake_script, "medmcqa", tmp_path / "runs") == 2
    assert "sample id(s) appear more than once" in capsys.readouterr().err


def test_a_pubmedqa_file_with_a_repeated_pmid_or_a_bad_label_is_refused(
    fake_script: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = fresh_data(tmp_path)
    path = data / "pubmedqa/test_set.json"
    entries = json.loads(path.read_text())
    pmid, entry = next(iter(entries.items()))
    twice = f"{json.dumps(pmid)}: {json.dumps(entry)}"
    path.write_text("{" + twice + ", " + twice + "}")
    assert eval_task(data, fake_script, "pubmedqa", tmp_path / "runs") == 2
    assert f"PMID {pmid} appears twice" in capsys.readouterr().err
    entries[pmid]["final_decision"] = "perhaps"
    path.write_text(json.dumps(entries))
    assert eval_task(data, fake_script, "pubmedqa", tmp_path / "runs") == 2
    assert "final_decision: 'perhaps' is not yes, no or maybe" in capsys.readouterr().err
    path.write_bytes(b'{"1": "\xff\xfe"}')
    assert eval_task(data, fake_script, "pubmedqa", tmp_path / "runs") == 2
    assert "not UTF-8 text" in capsys.readouterr().err


def test_medquad_pairs_without_a_question_are_skipped_and_counted(
    fake_script: Path, tmp_path: Path
) -> None:
    data = fresh_data(tmp_path)
    xml = next((data / "medquad").glob("*/*.xml"))
    text = xml.read_text()
    start = text.index("<Question")
    end = text.index("</Question>", start)
    question_open = text[start : text.index(">", start) + 1]
    xml.write_text(text[:start] + question_open + "   " + text[end:])
    for sums in (data / "medquad").glob("SHA256SUMS"):
        sums.unlink()  # the edit is deliberate here
    assert eval_task(data, fake_script, "medquad_gen", tmp_path / "runs") == 0
    manifest = json.loads((tmp_path / "runs/eval-fake/manifest.json").read_text())
    assert manifest["data"]["skipped"]["medquad_gen"]["no question"] == 1
    inputs = (tmp_path / "runs/eval-fake/inputs/medquad_gen.jsonl").read_text().splitlines()
    assert all(json.loads(line)["prompt"].strip() for line in inputs)


@pytest.mark.parametrize(
    "line",
    [
        "{digest}  us_4opt_test.jsonl",
        "{digest} *us_4opt_test.jsonl",
        "SHA256 (us_4opt_test.jsonl) = {digest}",
        "{digest}  ./us_4opt_test.jsonl",
    ],
)
def test_every_sha256sum_format_is_checked(
    fake_script: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str
) -> None:
    data = fresh_data(tmp_path)
    sums = data / "medqa/SHA256SUMS"
    sums.write_text(line.format(digest="0" * 64) + "\n")
    assert eval_task(data, fake_script, "medqa_4opt", tmp_path / "runs") == 2
    assert "differs from 000000000000" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a checksum line\n", "SHA256SUMS:1: not a sha256sum line"),
        (b"\xff\xfe\x00garbage\n", "SHA256SUMS: not UTF-8 text"),
    ],
)
def test_a_checksum_file_that_cannot_be_read_is_one_line(
    fake_script: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: bytes,
    message: str,
) -> None:
    data = fresh_data(tmp_path)
    (data / "medqa/SHA256SUMS").write_bytes(content)
    assert eval_task(data, fake_script, "medqa_4opt", tmp_path / "runs") == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_a_policy_threshold_must_be_a_finite_number(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(f"floors: {{medqa_4opt.acc: {value}}}\n")
    run = Path(__file__).parent / "fixtures/run-0.1"
    assert main(["gate", str(run), "--policy", str(policy)]) == 2
    assert "floors.medqa_4opt.acc: Input should be a finite number" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["gate", "report", "leaderboard"])
def test_an_edited_aggregate_is_refused_by_gate_report_and_leaderboard(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    run = tmp_path / "run"
    shutil.copytree(Path(__file__).parent / "fixtures/run-0.1", run)
    results = json.loads((run / "results.json").read_text())
    results["results"]["tuned"]["medqa_4opt"]["metrics"]["acc"]["value"] = 0.99
    (run / "results.json").write_text(json.dumps(results))
    policy = tmp_path / "p.yaml"
    policy.write_text("min_samples: 1\nfloors: {medqa_4opt.acc: 0.9}\n")
    args = {
        "gate": ["gate", str(run), "--policy", str(policy)],
        "report": ["report", str(run), "-o", str(tmp_path / "r.html")],
        "leaderboard": ["leaderboard", str(run), "-o", str(tmp_path / "l.html")],
    }[command]
    assert main(args) == 2
    assert "tuned/medqa_4opt disagrees with its sample log (acc 0.99 vs 0.25" in (
        capsys.readouterr().err
    )


def broken_model(tiny_llama: Path, tmp_path: Path, how: str) -> Path:
    folder = tmp_path / how
    shutil.copytree(tiny_llama, folder)
    weights = folder / "model.safetensors"
    if how == "truncated":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif how == "garbage":
        weights.write_bytes(b"\x00" * 64)
    elif how == "other-shapes":
        config = json.loads((folder / "config.json").read_text())
        config["hidden_size"] *= 2
        (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("truncated", "a weight file is corrupt or truncated"),
        ("garbage", "a weight file is corrupt or truncated"),
        ("other-shapes", "its weights do not fit its config.json's shapes"),
    ],
)
def test_broken_weights_are_one_line_and_exit_2(
    tiny_llama: Path,
    data_env: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    how: str,
    message: str,
) -> None:
    folder = broken_model(tiny_llama, tmp_path, how)
    args = ["eval", "--model", str(folder), "--tasks", "medqa_4opt", "--limit", "2"]
    assert main([*args, "--out", str(tmp_path / "runs")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0]


def test_an_unknown_peft_type_is_one_line(
    tiny_llama: Path, data_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_llama), LoraConfig(r=2, target_modules=["q_proj"])
    )
    model.save_pretrained(tmp_path / "adapter")
    config_path = tmp_path / "adapter/adapter_config.json"
    config_path.write_text(
        json.dumps({**json.loads(config_path.read_text()), "peft_type": "WIBBLE"})
    )
    args = ["eval", "--model", str(tiny_llama), "--adapter", str(tmp_path / "adapter")]
    assert main([*args, "--tasks", "medqa_4opt", "--out", str(tmp_path / "runs")]) == 2
    assert "peft_type 'WIBBLE' is not one this peft version knows" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text", ["[" * 20000, "a: " * 3000 + "1", "{" * 20000], ids=["lists", "maps", "flow"]
)
def test_extreme_yaml_nesting_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    config = tmp_path / "deep.yaml"
    config.write_text(text)
    assert main(["run", str(config), "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "deep.yaml" in err


@pytest.mark.parametrize("command", ["report", "leaderboard", "gate-junit", "gate-markdown"])
def test_an_output_path_that_is_a_folder_is_one_line_and_the_folder_untouched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    run = Path(__file__).parent / "fixtures/run-0.1"
    folder = tmp_path / "existing"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    policy = tmp_path / "p.yaml"
    policy.write_text("min_samples: 1\n")
    args = {
        "report": ["report", str(run), "-o", str(folder)],
        "leaderboard": ["leaderboard", str(run), "-o", str(folder)],
        "gate-junit": ["gate", str(run), "--policy", str(policy), "--junit", str(folder)],
        "gate-markdown": ["gate", str(run), "--policy", str(policy), "--markdown", str(folder)],
    }[command]
    assert main(args) == 2
    assert f"{folder} is a folder; name a file to write" in capsys.readouterr().err
    assert [p.name for p in folder.iterdir()] == ["keep.txt"]


def test_an_output_path_below_a_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "afile").write_text("x")
    run = Path(__file__).parent / "fixtures/run-0.1"
    assert main(["report", str(run), "-o", str(tmp_path / "afile/report.html")]) == 2
    assert "is not a folder" in capsys.readouterr().err


FAKE = "fake:{script}"
BAD_CONFIGS: dict[str, tuple[dict[str, object], str]] = {
    "models-empty": ({"models": []}, "models: List should have at least 1 item"),
    "models-not-a-list": ({"models": "m"}, "models: Input should be a valid list"),
    "model-names-repeat": (
        {"models": [{"name": "m", "model": FAKE}, {"name": "m", "model": FAKE}]},
        "model names must be unique; repeated: m",
    ),
    "model-name-with-slash": (
        {"models": [{"name": "a/b", "model": FAKE}]},
        "models.0.name: String should match pattern",
    ),
    "model-name-dotdot": (
        {"models": [{"name": "..", "model": FAKE}]},
        "models.0.name: String should match pattern",
    ),
    "model-spec-empty": ({"models": [{"name": "m", "model": ""}]}, "models.0.model: String should"),
    "model-spec-missing": ({"models": [{"name": "m"}]}, "models.0.model: Field required"),
    "backend-unknown": (
        {"models": [{"name": "m", "model": FAKE, "backend": "tpu"}]},
        "models.0.backend: Input should be 'auto', 'hf' or 'vllm'",
    ),
    "batch-size-zero": (
        {"models": [{"name": "m", "model": FAKE, "batch_size": 0}]},
        "Input should be greater than or equal to 1",
    ),
    "batch-size-word": (
        {"models": [{"name": "m", "model": FAKE, "batch_size": "big"}]},
        "Input should be 'auto'",
    ),
    "dtype-unknown": (
        {"models": [{"name": "m", "model": FAKE, "dtype": "int3"}]},
        "models.0.dtype: Input should be",
    ),
    "system-prompt-a-list": (
        {"models": [{"name": "m", "model": FAKE, "system_prompt": ["a"]}]},
        "models.0.system_prompt: Input should be a valid string",
    ),
    "limit-zero": ({"limit": 0}, "limit: Input should be greater than or equal to 1"),
    "limit-negative": ({"limit": -3}, "limit: Input should be greater than or equal to 1"),
    "limit-a-word": ({"limit": "all"}, "limit: Input should be a valid integer"),
    "seed-fraction": ({"seed": 1.5}, "seed: Input should be a valid integer"),
    "resamples-too-many": ({"bootstrap_resamples": 10**9}, "less than or equal to 100000"),
    "max-new-tokens-zero": ({"generation": {"max_new_tokens": 0}}, "max_new_tokens: Input"),
    "max-new-tokens-huge": (
        {"generation": {"max_new_tokens": 10**7}},
        "less than or equal to 8192",
    ),
    "tasks-empty": ({"tasks": []}, "tasks: List should have at least 1 item"),
    "task-limit-zero": ({"tasks": [{"name": "medqa_4opt", "limit": 0}]}, "tasks.0.limit: Input"),
    "tasks-repeat": ({"tasks": ["medqa_4opt", "medqa_4opt"]}, "task names must be unique"),
    "task-a-number": ({"tasks": [5]}, "tasks.0: Input should be a valid dictionary"),
    "name-empty": ({"name": ""}, "name: String should match pattern"),
    "name-too-long": ({"name": "x" * 300}, "name: String should match pattern"),
    "name-hidden": ({"name": ".hidden"}, "name: String should match pattern"),
    "train-a-fake-model": (
        {"models": [{"name": "m", "model": FAKE, "train": {}}]},
        "models.0: a fake model cannot be trained",
    ),
    "train-negative-lr": (
        {"models": [{"name": "m", "model": "x", "train": {"learning_rate": -1}}]},
        "models.0.train.learning_rate: Input should be greater than 0",
    ),
    "train-nan-lr": (
        {"models": [{"name": "m", "model": "x", "train": {"learning_rate": float("nan")}}]},
        "models.0.train.learning_rate: Input should be a finite number",
    ),
    "train-rank-zero": (
        {"models": [{"name": "m", "model": "x", "train": {"lora": {"r": 0}}}]},
        "models.0.train.lora.r: Input should be greater than or equal to 1",
    ),
    "train-zero-epochs": (
        {"models": [{"name": "m", "model": "x", "train": {"epochs": 0}}]},
        "models.0.train.epochs: Input should be greater than 0",
    ),
    "train-unknown-key": (
        {"models": [{"name": "m", "model": "x", "train": {"rank": 8}}]},
        "models.0.train.rank: unknown key",
    ),
    "sweep-unknown-parameter": (
        {"models": [{"name": "m", "model": "x", "train": {"sweep": {"points": [{"colour": 1}]}}}]},
        "cannot sweep 'colour'",
    ),
    "sweep-no-points": (
        {"models": [{"name": "m", "model": "x", "train": {"sweep": {"points": []}}}]},
        "the sweep has no points",
    ),
}


def with_script(value: object, script: str) -> object:
    """The case's config with the fake model's placeholder filled in."""
    if isinstance(value, str):
        return value.replace(FAKE, f"fake:{script}")
    if isinstance(value, list):
        return [with_script(item, script) for item in value]
    if isinstance(value, dict):
        return {key: with_script(item, script) for key, item in value.items()}
    return value


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_a_bad_config_value_is_one_line_naming_the_key_and_nothing_is_written(
    data_env: Path,
    fake_script: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
) -> None:
    overrides, message = BAD_CONFIGS[case]
    config = {
        "name": "p",
        "models": [{"name": "m", "model": FAKE}],
        "tasks": [{"name": "medqa_4opt", "limit": 3}],
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(with_script({**config, **overrides}, str(fake_script))))
    assert main(["run", str(path), "--out", str(tmp_path / "runs")]) == 2
    assert message in only_line(capsys)
    assert not (tmp_path / "runs").exists()


BAD_FILES: dict[str, tuple[bytes, str]] = {
    "yaml-a-list": (b"- a\n- b\n", "expected a mapping of settings at the top level"),
    "yaml-empty": (b"", "expected a mapping of settings at the top level"),
    "yaml-a-scalar": (b"hello\n", "expected a mapping of settings at the top level"),
    "yaml-tabs": (b"name:\tp\n\tmodels: []\n", "malformed YAML"),
    "yaml-key-twice": (b"name: p\nname: q\n", ":2: malformed YAML (duplicate key 'name')"),
    "yaml-nested-key-twice": (
        b"models:\n  - {name: a, model: x, model: y}\n",
        "malformed YAML (duplicate key 'model')",
    ),
    "yaml-python-tag": (
        b"name: !!python/object/apply:os.system ['echo pwned']\n",
        "could not determine a constructor for the tag",
    ),
    "yaml-alias-bomb": (
        b"a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
        b"c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n",
        "a: unknown key",
    ),
    "not-utf8": (b"name: \xff\xfe\n", "not UTF-8 text"),
    "binary": (bytes(range(256)), "not UTF-8 text"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_config_file_that_is_not_a_config_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    content, message = BAD_FILES[case]
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    assert main(["run", str(path), "--out", str(tmp_path / "runs")]) == 2
    assert message in only_line(capsys)
    assert not (tmp_path / "runs").exists()


def test_a_config_path_that_is_a_folder_or_missing_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(tmp_path)]) == 2
    assert "is a folder; name a YAML file" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def break_run(run: Path, how: str) -> None:
    results = run / "results.json"
    if how == "results-not-json":
        results.write_text("{not json")
    elif how == "results-empty":
        results.write_text("")
    elif how == "results-a-list":
        results.write_text("[1, 2]")
    elif how == "results-not-utf8":
        results.write_bytes(b"\xff\xfe{}")
    elif how == "sample-log-not-utf8":
        (run / "samples/base/medquad_gen.jsonl").write_bytes(b'{"doc_id": "\xff"}\n')
    elif how == "manifest-missing":
        (run / "manifest.json").unlink()
    elif how == "sample-log-missing":
        (run / "samples/tuned/medqa_4opt.jsonl").unlink()
    elif how == "sample-log-torn":
        log = run / "samples/tuned/medqa_4opt.jsonl"
        log.write_text(log.read_text()[:-40])
    elif how == "sample-log-row-dropped":
        log = run / "samples/tuned/medqa_4opt.jsonl"
        log.write_text("".join(log.read_text().splitlines(keepends=True)[1:]))
    elif how == "inputs-missing":
        (run / "inputs/medquad_gen.jsonl").unlink()
    elif how == "n-edited":
        data = json.loads(results.read_text())
        data["results"]["base"]["medqa_4opt"]["n"] = 80
        results.write_text(json.dumps(data))


BROKEN_RUNS = {
    "results-not-json": "results.json:1: not valid JSON",
    "results-empty": "results.json:1: not valid JSON",
    "results-a-list": "results.json: schema_version None",
    "results-not-utf8": "results.json: not UTF-8 text",
    "sample-log-not-utf8": "samples/base/medquad_gen.jsonl:1: not UTF-8 text",
    "manifest-missing": "is not a finished run directory (no manifest.json)",
    "sample-log-missing": "samples/tuned/medqa_4opt.jsonl is missing from the run directory",
    "sample-log-torn": "samples/tuned/medqa_4opt.jsonl:8: not valid JSON",
    "sample-log-row-dropped": "tuned/medqa_4opt disagrees with its sample log (n 8 vs 7",
    "n-edited": "base/medqa_4opt disagrees with its sample log (n 80 vs 8",
}


@pytest.mark.parametrize("how", list(BROKEN_RUNS))
@pytest.mark.parametrize("command", ["report", "gate", "leaderboard"])
def test_a_broken_run_directory_is_one_line_for_every_reader(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], how: str, command: str
) -> None:
    run = tmp_path / "run"
    shutil.copytree(Path(__file__).parent / "fixtures/run-0.1", run)
    break_run(run, how)
    policy = tmp_path / "p.yaml"
    policy.write_text("min_samples: 1\nregressions: {medqa_4opt.acc: 5}\n")
    args = {
        "report": ["report", str(run), "-o", str(tmp_path / "out.html")],
        "gate": ["gate", str(run), "--policy", str(policy)],
        "leaderboard": ["leaderboard", str(run), "-o", str(tmp_path / "out.html")],
    }[command]
    assert main(args) == 2
    assert BROKEN_RUNS[how] in only_line(capsys)
    assert not (tmp_path / "out.html").exists()


def test_a_report_on_a_run_without_its_inputs_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(Path(__file__).parent / "fixtures/run-0.1", run)
    break_run(run, "inputs-missing")
    assert main(["report", str(run), "-o", str(tmp_path / "r.html")]) == 2
    assert "inputs/medquad_gen.jsonl is missing from the run directory" in capsys.readouterr().err


@pytest.mark.parametrize("what", ["missing", "a-file"])
def test_a_run_path_that_is_not_a_folder_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], what: str
) -> None:
    path = tmp_path / "run"
    if what == "a-file":
        path.write_text("x")
    assert main(["report", str(path), "-o", str(tmp_path / "r.html")]) == 2
    assert "is not a finished run directory" in capsys.readouterr().err


class Payload:
    """Pickled, this object asks to write a file when it is unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (Path(self.marker).write_text, ("code in a pickle ran",))  # type: ignore[return-value]


def test_allowed_pickles_still_load_with_weights_only_so_no_code_runs(
    tiny_llama: Path, data_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    folder = tmp_path / "model"
    shutil.copytree(tiny_llama, folder)
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "pwned"
    torch.save({"model.embed_tokens.weight": Payload(marker)}, folder / "pytorch_model.bin")
    args = ["eval", "--model", str(folder), "--tasks", "medqa_4opt", "--limit", "2"]
    assert main([*args, "--allow-pickle", "--out", str(tmp_path / "runs")]) == 2
    assert not marker.exists(), "code in a pickle ran"
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "loaded with weights_only, so nothing in them runs" in errors[0]


BAD_FAKE_SCRIPTS = {
    "rule-match-a-number": ("generate: [{match: 1, output: x}]", "generate.0.match: Input should"),
    "rule-without-match": ("generate: [{output: x}]", "generate.0.match: Field required"),
    "rules-not-a-list": ("generate: 5", "generate: Input should be a valid list"),
    "choice-without-answer": ("choose: [{match: a}]", "choose.0.answer: Field required"),
    "babble-a-word": ("babble_words: many", "babble_words: Input should be a valid integer"),
    "negative-delay": ("delay: -1", "delay: Input should be greater than or equal to 0"),
    "seed-a-list": ("seed: [1]", "seed: Input should be a valid integer"),
    "trace-in-no-folder": ("trace_file: /no/such/dir/x.log", "trace_file: the folder of"),
    "unknown-key": ("colour: red", "colour: unknown key"),
}


@pytest.mark.parametrize("case", list(BAD_FAKE_SCRIPTS))
def test_a_bad_fake_model_script_is_one_line(
    data_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    text, message = BAD_FAKE_SCRIPTS[case]
    script = tmp_path / "fake.yaml"
    script.write_text(text + "\n")
    args = ["eval", "--model", f"fake:{script}", "--tasks", "medqa_4opt,medquad_gen"]
    assert main([*args, "--limit", "2", "--out", str(tmp_path / "runs")]) == 2
    assert f"{script}: {message}" in only_line(capsys)


BAD_POLICY_VALUES = {
    "negative-drop": ("regressions: {medqa_4opt.acc: -5}", "Input should be greater than"),
    "quoted-alpha": ('alpha: "0.05"', "alpha: Input should be a valid number"),
    "quoted-floor": ('floors: {medqa_4opt.acc: "0.5"}', "Input should be a valid number"),
    "percent-floor": ("floors: {medqa_4opt.acc: 55}", "did you mean 0.55?"),
    "negative-floor": ("floors: {medquad_gen.bleu: -1}", "floor -1 is outside 0-100"),
    "key-without-metric": ("floors: {medqa_4opt: 0.5}", "unknown metric ''"),
}


@pytest.mark.parametrize("case", list(BAD_POLICY_VALUES))
def test_a_policy_number_off_its_scale_or_not_a_number_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    text, message = BAD_POLICY_VALUES[case]
    policy = tmp_path / "p.yaml"
    policy.write_text(text + "\n")
    run = Path(__file__).parent / "fixtures/run-0.1"
    assert main(["gate", str(run), "--policy", str(policy)]) == 2
    assert message in only_line(capsys)


def test_an_empty_run_name_or_a_data_root_that_is_a_file_is_refused(
    fake_script: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["eval", "--model", f"fake:{fake_script}", "--tasks", "medqa_4opt"]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--name", " ", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "expected a name, got an empty one" in capsys.readouterr().err
    assert main([*args, "--data-dir", str(fake_script), "--out", str(tmp_path)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


XML_ATTACKS = {
    # an external entity would read a local file into the data; expat refuses to define it
    "external-entity": '<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>',
    # nested entities that expand a few hundred bytes into gigabytes
    "entity-expansion": "<!DOCTYPE d ["
    + '<!ENTITY a "aaaaaaaaaa">'
    + "".join(
        f'<!ENTITY {c} "{("&" + p + ";") * 10}">'
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    + "]>",
}


@pytest.mark.parametrize("attack", list(XML_ATTACKS))
def test_a_medquad_file_with_an_xml_attack_is_refused_in_one_line(
    fake_script: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], attack: str
) -> None:
    data = fresh_data(tmp_path)
    xml = sorted((data / "medquad").glob("*/*.xml"))[0]
    entity = "&x;" if attack == "external-entity" else "&i;"
    text = xml.read_text().replace(
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<?xml version="1.0" encoding="UTF-8"?>' + XML_ATTACKS[attack],
    )
    xml.write_text(text.replace("<Focus>", "<Focus>" + entity, 1))
    assert eval_task(data, fake_script, "medquad_gen", tmp_path / "runs") == 2
    assert f"{xml}: not valid XML" in only_line(capsys)
    assert not (tmp_path / "runs" / "eval-fake").exists()


def test_an_unknown_command_is_one_usage_line_and_exit_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["frobnicate"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err
