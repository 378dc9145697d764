"""Every shipped config loads; every task's lm-eval YAML passes lm-eval's own validation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from medharness.config import load_config
from medharness.tasks import TASKS

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_config_loads(path: Path) -> None:
    config = load_config(path)
    assert config.models and config.tasks


def test_every_task_has_an_lm_eval_yaml_that_validates(data_env: Path) -> None:
    # rubric-graded tasks need a model grader per rubric item, which lm-eval has not
    viewed = {name for name, task in TASKS.items() if not task.rubric_graded}
    assert {p.stem for p in (ROOT / "tasks").glob("*.yaml")} == viewed
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lm_eval",
            "validate",
            "--include_path",
            str(ROOT / "tasks"),
            "--tasks",
            ",".join(sorted(viewed)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "All tasks found and valid" in result.stdout + result.stderr
