"""What a newcomer meets in the first hour: help, setup notes, the exit-code contract,
flags that must not be ignored, file modes, and examples that match the code."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from medharness.cli import main
from medharness.tasks import TASKS

ROOT = Path(__file__).resolve().parent.parent


def test_help_prints_percent_signs_once_and_every_run_command_takes_a_data_dir(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for command in ("run", "train", "eval", "reproduce"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = capsys.readouterr().out
        assert "--data-dir" in out, command
        assert "%%" not in out, command


def test_readme_first_screen_says_what_to_type_and_what_is_needed() -> None:
    first_screen = (ROOT / "README.md").read_text().split("## Commands")[0]
    for needed in (".venv/bin/medharness", "C compiler", "7 GB", "chromium", "make run"):
        assert needed in first_screen, needed


def test_run_takes_the_data_dir_from_the_command_line(
    fixture_data: Path, fake_script: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MEDHARNESS_DATA_DIR", raising=False)
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "d",
                "models": [{"name": "m", "model": f"fake:{fake_script}"}],
                "tasks": [{"name": "medqa_4opt", "limit": 2}],
            }
        )
    )
    out = ["--out", str(tmp_path / "runs")]
    assert main(["run", str(config), *out, "--data-dir", str(fixture_data)]) == 0
    manifest = json.loads((tmp_path / "runs/d/manifest.json").read_text())
    assert manifest["data"]["root"] == str(fixture_data)


def offline_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    return env | {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home")}


def medharness(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str, float]:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "medharness", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
        check=False,
    )
    return result.returncode, result.stderr, time.monotonic() - started


def test_a_hub_id_offline_is_one_line_and_exit_2_at_once(data_env: Path, tmp_path: Path) -> None:
    code, err, seconds = medharness(
        ["eval", "--model", "someorg/some-model", "--tasks", "medqa_4opt", "--limit", "2"],
        offline_env(tmp_path) | {"MEDHARNESS_DATA_DIR": str(data_env)},
        tmp_path,
    )
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "the hub is offline (HF_HUB_OFFLINE is set)" in lines[0]
    assert "allow_pickle" not in err and seconds < 60


def test_reproduce_offline_without_model_says_to_pass_one(data_env: Path, tmp_path: Path) -> None:
    code, err, _ = medharness(
        ["reproduce", str(ROOT / "cards/med-llama-3.2.yaml"), "--budget", "small"],
        offline_env(tmp_path) | {"MEDHARNESS_DATA_DIR": str(data_env)},
        tmp_path,
    )
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "pass --model" in lines[0] and "Traceback" not in err


def test_a_bug_exits_3_with_its_traceback_never_1(tmp_path: Path) -> None:
    crash = "import medharness.cli as cli; cli.main = lambda: 1 / 0; cli.entry()"
    result = subprocess.run(
        [sys.executable, "-c", crash], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 3
    assert "ZeroDivisionError" in result.stderr and "internal error" in result.stderr


def test_limit_caps_training_too_and_the_manifest_says_so(
    fixture_data: Path, tiny_llama: Path, tmp_path: Path
) -> None:
    config = tmp_path / "c.yaml"
    train = {"max_steps": 2, "batch_size": 2, "logging_steps": 1}
    config.write_text(
        yaml.safe_dump(
            {
                "name": "limited",
                "data_dir": str(fixture_data),
                "models": [{"name": "tuned", "model": str(tiny_llama), "train": train}],
                "tasks": [{"name": "medquad_gen", "limit": 4}],
                "generation": {"max_new_tokens": 4},
            }
        )
    )
    assert main(["run", str(config), "--out", str(tmp_path / "runs"), "--limit", "2"]) == 0
    run = tmp_path / "runs/limited"
    trained = json.loads((run / "train/tuned/train_config.json").read_text())
    assert trained["examples"] == 2
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["config"]["models"][0]["train"]["limit"] == 2


def test_run_files_get_the_umask_mode_not_0600(
    data_env: Path, fake_script: Path, tmp_path: Path
) -> None:
    previous = os.umask(0o022)
    try:
        code = main(
            ["eval", "--model", f"fake:{fake_script}", "--tasks", "medqa_4opt", "--limit", "2",
             "--out", str(tmp_path)]
        )  # fmt: skip
    finally:
        os.umask(previous)
    assert code == 0
    run = tmp_path / "eval-fake"
    for name in ("results.json", "manifest.json", "report.html", "samples/fake/medqa_4opt.jsonl"):
        assert stat.S_IMODE((run / name).stat().st_mode) == 0o644, name


def test_the_example_gate_policy_gates_a_run_with_any_model_names(
    data_env: Path, fake_script: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "q.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "quick",
                "models": [
                    {"name": "smollm2", "model": f"fake:{fake_script}"},
                    {"name": "smollm2-medprompt", "model": f"fake:{fake_script}"},
                ],
                "tasks": [{"name": "medquad_gen", "limit": 4}, {"name": "medqa_4opt", "limit": 4}],
            }
        )
    )
    assert main(["run", str(config), "--out", str(tmp_path / "runs")]) == 0
    capsys.readouterr()
    code = main(
        ["gate", str(tmp_path / "runs/quick"), "--policy", str(ROOT / "examples/gate.yaml")]
    )
    assert code == 1  # judged (4 questions cannot decide a 3-point margin), not refused
    out, err = capsys.readouterr()
    assert "medharness: error" not in err and "INCONCLUSIVE" in out


def lm_eval_yaml(path: Path) -> dict[str, Any]:
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))
    data: dict[str, Any] = yaml.load(path.read_text(), Loader=Loader)
    return data


# rubric-graded tasks have no lm-eval view: lm-eval cannot grade rubric items with a model
@pytest.mark.parametrize("name", [name for name, task in TASKS.items() if not task.rubric_graded])
def test_lm_eval_yamls_carry_the_task_version_and_metrics(name: str) -> None:
    data = lm_eval_yaml(ROOT / "tasks" / f"{name}.yaml")
    task = TASKS[name]
    assert float(data["metadata"]["version"]) == float(task.version)
    assert [m["metric"] for m in data["metric_list"]] == list(task.metric_names)


def test_eval_table_is_in_points_and_aligned(
    data_env: Path, fake_script: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["eval", "--model", f"fake:{fake_script}", "--tasks", "medquad_gen,medqa_4opt"]
    assert main([*args, "--limit", "4", "--out", str(tmp_path)]) == 0
    lines = [
        line for line in capsys.readouterr().out.splitlines() if line.startswith(("model", "fake"))
    ]
    results = json.loads((tmp_path / "eval-fake/results.json").read_text())["results"]["fake"]
    starts = {line.index("[") for line in lines[1:]}
    assert len(starts) == 1  # every interval starts in the same column
    shown = {line.split()[2]: float(line.split()[3]) for line in lines[1:]}
    assert shown["rouge1"] == pytest.approx(
        results["medquad_gen"]["metrics"]["rouge1"]["value"] * 100, abs=0.01
    )
    assert shown["bleu"] == pytest.approx(
        results["medquad_gen"]["metrics"]["bleu"]["value"], abs=0.01
    )
    assert shown["disclaimer_rate"] == pytest.approx(
        results["medquad_gen"]["metrics"]["disclaimer_rate"]["value"] * 100, abs=0.01
    )
    assert re.search(r"value", lines[0])


def test_generation_reports_progress_while_a_batch_decodes(tiny_llama: Path) -> None:
    from medharness.models.loading import load_model

    model = load_model(str(tiny_llama), batch_size=4)
    heard: list[float] = []
    model.generate([f"question {i}" for i in range(6)], 8, heard.append)
    assert sum(heard) == pytest.approx(6)
    assert len(heard) > 2  # more than once per batch: it moves before a batch ends
    assert heard[0] < 4  # the first report comes before the first batch of 4 is done


@pytest.mark.parametrize(
    ("files", "env", "expected"),
    [
        ({"cpu.max": "200000 100000\n"}, None, 2),
        ({"cpu.max": "150000 100000\n"}, None, 2),  # 1.5 CPUs: two threads
        ({"cpu.max": "max 100000\n"}, None, None),  # no quota: the affinity decides
        ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, None, 1),
        ({"cpu.max": "200000 100000\n"}, "3", 3),  # the variable overrides
    ],
)
def test_cpu_threads_follow_the_cores_really_available(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    files: dict[str, str],
    env: str | None,
    expected: int | None,
) -> None:
    from medharness.models.choice import cpu_threads

    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    if env is None:
        monkeypatch.delenv("MEDHARNESS_THREADS", raising=False)
    else:
        monkeypatch.setenv("MEDHARNESS_THREADS", env)
    affinity = len(os.sched_getaffinity(0))
    want = expected if expected is not None else affinity
    if env is None and expected is not None:
        want = min(expected, affinity)
    assert cpu_threads(tmp_path) == want


def fake_run(
    tmp_path: Path, script: Path, name: str, limit: int, max_new_tokens: int = 128
) -> Path:
    config = tmp_path / f"{name}.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": name,
                "models": [{"name": "m", "model": f"fake:{script}"}],
                "tasks": [{"name": "medquad_gen", "limit": limit}],
                "generation": {"max_new_tokens": max_new_tokens},
                "bootstrap_resamples": 200,
            }
        )
    )
    assert main(["run", str(config), "--out", str(tmp_path / "runs")]) == 0
    return tmp_path / "runs" / name


def test_leaderboard_warns_when_decoding_differs(
    data_env: Path, fake_script: Path, tmp_path: Path
) -> None:
    short = fake_run(tmp_path, fake_script, "short", 6, max_new_tokens=32)
    long = fake_run(tmp_path, fake_script, "long", 6, max_new_tokens=128)
    assert main(["leaderboard", str(short), str(long), "-o", str(tmp_path / "l.html")]) == 0
    html = (tmp_path / "l.html").read_text()
    assert "medquad_gen: runs differ in decoding settings (max_new_tokens)" in html
    assert "max_new_tokens=32" in html and "max_new_tokens=128" in html


def test_gate_refuses_a_baseline_decoded_differently(
    data_env: Path, fake_script: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    short = fake_run(tmp_path, fake_script, "short", 6, max_new_tokens=32)
    long = fake_run(tmp_path, fake_script, "long", 6, max_new_tokens=128)
    policy = tmp_path / "p.yaml"
    policy.write_text("min_samples: 1\nregressions: {medquad_gen.rouge1: 1.0}\n")
    code = main(["gate", str(long), "--policy", str(policy), "--baseline", str(short)])
    assert code == 2
    assert "not comparable: they differ in medquad_gen (decoding)" in capsys.readouterr().err


def test_report_on_different_sample_sets_shows_no_deltas_and_groups_every_sample(
    data_env: Path, fake_script: Path, tmp_path: Path
) -> None:
    small = fake_run(tmp_path, fake_script, "small", 8)
    large = fake_run(tmp_path, fake_script, "large", 24)
    assert main(["report", str(small), str(large), "-o", str(tmp_path / "r.md")]) == 0
    markdown = (tmp_path / "r.md").read_text()
    large_row = next(line for line in markdown.splitlines() if line.startswith("| large/m"))
    assert "(not comparable)" in large_row and "pts" not in large_row
    assert main(["report", str(small), str(large), "-o", str(tmp_path / "r.html")]) == 0
    html = (tmp_path / "r.html").read_text()
    assert "differs from the baseline in sample sets" in html
    assert "(none)" not in html.split('id="browser"')[0]  # every sample's qtype is known
