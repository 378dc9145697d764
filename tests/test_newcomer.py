"""What a newcomer met in their first hours: a test suite that stopped at its first failing
suite, quick evals that replaced each other, verdicts that misled."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import save_lora
from test_reports import layout_probe, needs_chromium

from medharness.cli import main
from medharness.config import ModelEntry, load_config
from medharness.core.records import ChoiceRow, ResultsFile
from medharness.reports.compare import compare_task, corrected
from medharness.reports.leaderboard import comparability_warnings
from medharness.reports.runs import RunData
from medharness.tasks import TASKS
from medharness.trainers.sft import HANDFUL_OF_STEPS, too_little_training

ROOT = Path(__file__).resolve().parent.parent


def stub_pytest(folder: Path, exit_code: int) -> Path:
    """A stand-in ``pytest`` that leaves a mark and exits with ``exit_code``."""
    folder.mkdir()
    script = folder / "pytest"
    script.write_text(f"#!/bin/sh\ntouch {folder}/ran\nexit {exit_code}\n", encoding="utf-8")
    script.chmod(0o755)
    return folder


@pytest.mark.parametrize(("main_code", "vllm_code"), [(1, 0), (0, 1), (0, 0)])
def test_make_test_runs_both_suites_and_fails_if_either_failed(
    tmp_path: Path, main_code: int, vllm_code: int
) -> None:
    main = stub_pytest(tmp_path / "main", main_code)
    vllm = stub_pytest(tmp_path / "vllm", vllm_code)
    done = subprocess.run(
        ["make", "-s", "-C", str(ROOT), "test-suites", f"BIN={main}", f"VLLM_BIN={vllm}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (main / "ran").exists() and (vllm / "ran").exists()  # neither stops the other
    assert (done.returncode != 0) == bool(main_code or vllm_code)


def quick_eval(out: Path, model: Path, *extra: str) -> int:
    args = ["eval", "--model", str(model), "--tasks", "medqa_4opt", "--limit", "4"]
    return main([*args, "--batch-size", "2", "--out", str(out), *extra])


def test_an_eval_with_an_adapter_and_one_without_keep_both_results(
    tiny_llama: Path, data_env: Path, tmp_path: Path, recwarn: pytest.WarningsRecorder
) -> None:
    save_lora(tiny_llama, tmp_path / "tuned-lora")
    recwarn.clear()  # what making the adapter said; medharness's own calls are checked below
    assert quick_eval(tmp_path / "runs", tiny_llama, "--adapter", str(tmp_path / "tuned-lora")) == 0
    assert quick_eval(tmp_path / "runs", tiny_llama) == 0
    base, tuned = tiny_llama.name, f"{tiny_llama.name}-with-tuned-lora"
    for name in (base, tuned):  # each in its own folder, labelled as what it evaluated
        results = ResultsFile.model_validate_json(
            (tmp_path / "runs" / f"eval-{name}" / "results.json").read_bytes()
        )
        assert list(results.results) == [name]
    manifest = json.loads((tmp_path / "runs" / f"eval-{tuned}" / "manifest.json").read_text())
    assert manifest["config"]["models"][0]["adapter"] == str(tmp_path / "tuned-lora")
    assert not [w for w in recwarn if issubclass(w.category, FutureWarning)]  # library noise


def test_a_default_named_eval_never_replaces_one_of_other_settings(
    fake_script: Path, data_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs, model = tmp_path / "runs", Path(f"fake:{fake_script}")
    assert quick_eval(runs, model) == 0
    first = (runs / f"eval-{fake_script.stem}" / "results.json").read_bytes()
    assert quick_eval(runs, model) == 0  # the same eval again: reused
    capsys.readouterr()
    assert quick_eval(runs, model, "--limit", "3") == 2  # "eval-other-settings" in docs/errors.md
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds an eval of other settings" in err[0] and "--name" in err[0]
    assert (runs / f"eval-{fake_script.stem}" / "results.json").read_bytes() == first
    assert quick_eval(runs, model, "--limit", "3", "--name", "three") == 0


def choice_row(doc_id: int, right: bool) -> ChoiceRow:
    return ChoiceRow(
        doc_id=str(doc_id),
        target="A",
        prediction="A" if right else "B",
        choices=["A", "B"],
        loglikelihoods=[-0.1, -2.0] if right else [-2.0, -0.1],
        chosen=0 if right else 1,
        gold=0,
        metrics={"acc": float(right)},
    )


def test_an_interval_that_tells_otherwise_than_its_adjusted_verdict_is_marked() -> None:
    from statsmodels.stats.multitest import multipletests

    baseline = [choice_row(i, True) for i in range(40)]
    worse = [choice_row(i, i >= 6) for i in range(40)]  # 6 discordant pairs, all one way
    same = [choice_row(i, i not in (1, 2)) for i in range(40)]
    found = [
        *compare_task("t", "base", "worse", baseline, worse, ["acc"], seed=1),
        *compare_task("u", "base", "same", baseline, same, ["acc"], seed=1),
        *compare_task("v", "base", "same", baseline, same, ["acc"], seed=1),
    ]
    raw = found[0]
    assert raw.p_value < 0.05 and raw.ci95[1] < 0 and not raw.interval_disagrees()
    adjusted = corrected(found, "holm")
    holm = multipletests([c.p_value for c in found], method="holm")[1]
    assert adjusted[0].p_adjusted == pytest.approx(holm[0]) and holm[0] > 0.05
    assert adjusted[0].verdict == "no significant difference"
    assert adjusted[0].interval_disagrees()  # the raw interval excludes 0: marked unadjusted


def test_the_detectable_difference_is_the_power_calculation_at_the_observed_spread() -> None:
    from statsmodels.stats.power import NormalIndPower

    baseline = [choice_row(i, i % 3 != 0) for i in range(90)]
    candidate = [choice_row(i, i % 4 != 0) for i in range(90)]
    comparison = compare_task("t", "a", "b", baseline, candidate, ["acc"], resamples=4000)[0]
    differences = np.array(
        [c.metrics["acc"] - b.metrics["acc"] for b, c in zip(baseline, candidate, strict=True)]
    )
    effect = NormalIndPower().solve_power(nobs1=90, alpha=0.05, power=0.8, ratio=0)
    expected = effect * differences.std()  # in standard deviations of one paired difference
    assert comparison.detectable == pytest.approx(expected, rel=0.08)


def test_the_report_says_identical_inputs_and_outputs_instead_of_testing_them(
    finished_run: Path,
) -> None:
    report = (finished_run / "report.html").read_text()
    medqa = report.split('id="task-medqa_4opt"')[1].split('id="task-')[0]
    medquad = report.split('id="task-medquad_gen"')[1].split('id="task-')[0]
    # the two entries differ only by a system prompt: log-likelihood scoring never shows it
    assert "identical inputs: equal by construction" in medqa
    # ...which free text does; the fake models ignore it and write the same answers
    assert "equal by construction" not in medquad
    assert "identical outputs on all" in medquad and "nothing to test" in medquad
    assert "[+0.00, +0.00]" not in report


def test_entries_alike_by_construction_only_where_the_task_cannot_tell_them_apart() -> None:
    base = ModelEntry(name="a", model="smollm2-135m-instruct")
    prompted = ModelEntry(name="b", model="smollm2-135m-instruct", system_prompt="Be careful.")
    asked = prompted.model_copy(update={"multiple_choice": "generate"})
    adapted = ModelEntry(name="c", model="smollm2-135m-instruct", adapter="lora")
    assert base.answers_alike(prompted, "multiple_choice")
    assert not base.answers_alike(prompted, "generate")
    assert not base.answers_alike(asked, "multiple_choice")
    assert not base.answers_alike(adapted, "multiple_choice")


def test_the_quickstart_compares_models_that_can_differ_on_every_task() -> None:
    config = load_config(ROOT / "configs" / "quickstart.yaml")
    baseline, *others = config.models
    for entry in others:
        for task in config.tasks:
            kind = TASKS[task.name].kind
            assert not baseline.answers_alike(entry, kind), (entry.name, task.name)


def test_a_comparison_that_finds_nothing_says_what_n_could_have_found(
    data_env: Path, tmp_path: Path
) -> None:
    scripts = []
    for seed in (1, 2):
        path = tmp_path / f"m{seed}.yaml"
        path.write_text(yaml.safe_dump({"seed": seed, "babble_words": 8}), encoding="utf-8")
        scripts.append(path)
    config = {
        "name": "small",
        "models": [{"name": f"m{i}", "model": f"fake:{path}"} for i, path in enumerate(scripts)],
        "tasks": [{"name": "medqa_4opt", "limit": 8}],
        "bootstrap_resamples": 500,
    }
    (tmp_path / "small.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    assert main(["run", str(tmp_path / "small.yaml"), "--out", str(tmp_path / "runs")]) == 0
    report = (tmp_path / "runs" / "small" / "report.html").read_text()
    found = re.search(
        r"m1, acc: with n = 8, a true difference smaller than about ([0-9.]+) points", report
    )
    assert found and 10 < float(found.group(1)) <= 100


@pytest.mark.parametrize("schedule", ["linear", "cosine", "constant", "constant_with_warmup"])
@pytest.mark.parametrize(("steps", "warmup"), [(2, 1), (2, 0), (12, 1), (12, 0), (3, 5), (40, 4)])
def test_steps_at_a_non_zero_rate_are_those_transformers_schedules(
    schedule: str, steps: int, warmup: int
) -> None:
    import torch
    from transformers import get_scheduler

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    scheduler = get_scheduler(
        schedule, optimizer, num_warmup_steps=warmup, num_training_steps=steps
    )
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    moving = sum(rate > 0 for rate in rates)
    warms_up = 0 if schedule == "constant" else warmup  # as the recipe passes it
    warnings = too_little_training(steps, warms_up, 1e-3)
    said = [w for w in warnings if w.startswith(f"only {moving} optimiser step")]
    assert bool(said) == (moving < HANDFUL_OF_STEPS), (rates, warnings)
    below_peak = max(rates) < 1e-3
    assert any("fewer than its" in w for w in warnings) == below_peak, (rates, warnings)


def test_a_training_that_hardly_trained_is_flagged_in_the_run_and_report(
    fixture_data: Path,
    tiny_llama: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    recwarn: pytest.WarningsRecorder,
) -> None:
    train = {"max_steps": 2, "batch_size": 4, "logging_steps": 1, "warmup_ratio": 0.5}
    config = {
        "name": "barely",
        "data_dir": str(fixture_data),
        "bootstrap_resamples": 200,
        "models": [{"name": "tuned", "model": str(tiny_llama), "batch_size": 1, "train": train}],
        "tasks": [{"name": "medquad_gen", "limit": 2}],
        "generation": {"max_new_tokens": 4},
    }
    (tmp_path / "barely.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    assert main(["run", str(tmp_path / "barely.yaml"), "--out", str(tmp_path / "runs")]) == 0
    assert "medharness: warning: training tuned: only 1 optimiser step" in capsys.readouterr().err
    run = tmp_path / "runs" / "barely"
    manifest = json.loads((run / "manifest.json").read_text())
    warnings = manifest["models"]["tuned"]["trained"]["warnings"]
    assert len(warnings) == 1 and warnings[0].startswith("only 1 optimiser step")
    saved = json.loads((run / "train" / "tuned" / "train_config.json").read_text())
    assert saved["warnings"] == warnings
    assert "Training of tuned:</strong> only 1 optimiser step" in (run / "report.html").read_text()
    assert not [w for w in recwarn if issubclass(w.category, FutureWarning)]  # library noise


@pytest.mark.parametrize("command", ["eval", "run"])
def test_missing_data_is_refused_before_the_model_libraries_load(
    command: str, fake_script: Path, tmp_path: Path
) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump({"name": "x", "models": [{"name": "m", "model": f"fake:{fake_script}"}],
                        "tasks": ["medqa_4opt"]}),
        encoding="utf-8",
    )  # fmt: skip
    argv = {
        "eval": ["eval", "--model", f"fake:{fake_script}", "--tasks", "medqa_4opt"],
        "run": ["run", str(config)],
    }[command]
    probe = (
        "import sys; from medharness.cli import main; "
        f"code = main({[*argv, '--out', str(tmp_path / 'runs')]!r}); "
        "print(code, 'torch' in sys.modules)"
    )
    env = {**os.environ, "MEDHARNESS_DATA_DIR": str(tmp_path / "empty")}
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.stdout.split() == ["2", "False"], done.stderr[-2000:]
    assert "data for medqa_4opt not found" in done.stderr


def test_verifying_an_empty_data_root_says_there_is_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", "verify", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("medharness: error: nothing to verify: no dataset")
    assert "`medharness data pull` fetches them" in err[0]


def tiny_pair_run(tmp_path: Path, tiny_llama: Path, data: Path) -> Path:
    """A run of the tiny model and the same model with a LoRA adapter: a tuned model and
    its own base, behind a first run of another model."""
    save_lora(tiny_llama, tmp_path / "lora")
    config = {
        "name": "tuned",
        "data_dir": str(data),
        "bootstrap_resamples": 200,
        "models": [
            {"name": "base", "model": str(tiny_llama), "batch_size": 2},
            {
                "name": "lora",
                "model": str(tiny_llama),
                "batch_size": 2,
                "adapter": str(tmp_path / "lora"),
            },
        ],
        "tasks": [{"name": "medqa_4opt", "limit": 6}],
    }
    (tmp_path / "tuned.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    assert main(["run", str(tmp_path / "tuned.yaml"), "--out", str(tmp_path / "runs")]) == 0
    return tmp_path / "runs" / "tuned"


def test_the_leaderboard_compares_a_tuned_model_with_its_own_base(
    tiny_llama: Path, fixture_data: Path, fake_script: Path, tmp_path: Path
) -> None:
    from medharness.reports.leaderboard import build_leaderboard

    first = tmp_path / "first.yaml"
    first.write_text(
        yaml.safe_dump({"name": "first", "data_dir": str(fixture_data),
                        "models": [{"name": "other", "model": f"fake:{fake_script}"}],
                        "tasks": [{"name": "medqa_4opt", "limit": 6}]}),
        encoding="utf-8",
    )  # fmt: skip
    assert main(["run", str(first), "--out", str(tmp_path / "runs")]) == 0
    tuned = tiny_pair_run(tmp_path, tiny_llama, fixture_data)
    board = build_leaderboard([tmp_path / "runs" / "first", tuned])
    rows = {row["label"]: row for row in board["rows"]}
    assert rows["other"]["own_base"] is None and rows["base"]["own_base"] is None
    versus = rows["lora"]["own_base"]
    expected = compare_task(
        "medqa_4opt", "base", "lora",
        RunData.open(tuned).samples("base", "medqa_4opt"),
        RunData.open(tuned).samples("lora", "medqa_4opt"),
        ["acc"], resamples=200,
    )[0]  # fmt: skip
    assert versus["base"] == "base" and versus["better"] + versus["worse"] + versus["same"] == 1
    assert versus["details"] == [f"medqa_4opt acc {expected.difference:+.4f} ({expected.verdict})"]


def test_the_leaderboard_says_one_cause_once(
    data_env: Path, fake_script: Path, tmp_path: Path
) -> None:
    for name, limit in (("few", 3), ("more", 5)):
        config = tmp_path / f"{name}.yaml"
        config.write_text(
            yaml.safe_dump({"name": name, "tasks": [{"name": "medqa_4opt", "limit": limit}],
                            "models": [{"name": name, "model": f"fake:{fake_script}"}]}),
            encoding="utf-8",
        )  # fmt: skip
        assert main(["run", str(config), "--out", str(tmp_path / "runs")]) == 0
    runs = [RunData.open(tmp_path / "runs" / name) for name in ("few", "more")]
    warnings = comparability_warnings(runs)
    assert warnings == [
        "medqa_4opt: runs differ in sample counts (limits) (few: n=3, more: n=5); "
        "its columns do not compare like with like"
    ]


@needs_chromium
def test_the_leaderboard_shows_provenance_without_scrolling_at_1400_px(
    finished_run: Path, tmp_path: Path
) -> None:
    board = tmp_path / "board.html"  # four tasks, a dozen metric columns: wider than 1400 px
    assert main(["leaderboard", str(finished_run), "-o", str(board)]) == 0
    probe = """addEventListener("load", () => {
      const box = document.querySelector("#board").parentElement;
      const cells = [...document.querySelectorAll("#board tbody tr:first-child td.prov")];
      document.body.dataset.scrolls = box.scrollWidth > box.clientWidth + 1;
      document.body.dataset.hidden = cells.filter(
        (cell) => cell.getBoundingClientRect().right > innerWidth).length;
      document.body.dataset.cells = cells.length;
    });"""
    dom = layout_probe(board, tmp_path, 1400, probe)
    assert 'data-scrolls="true"' in dom  # the table is wider than the window...
    assert 'data-cells="3"' in dom and 'data-hidden="0"' in dom  # ...its provenance in view


def test_the_viewer_counts_matches_out_of_the_whole_task(finished_run: Path) -> None:
    from medharness.reports.viewer import DISAGREE, Viewer, render

    viewer = Viewer.open([finished_run])
    every = viewer.select("medqa_4opt")
    none = viewer.select("medqa_4opt", DISAGREE)  # the two fake models choose alike
    assert len(every) == 5 and none == []
    assert "0 of 5 samples match the filters" in render(none, len(every))
    assert "5 of 5 samples</p>" in render(every, len(every))
