"""benchmarks/gpu_suite.py, the one command for a GPU machine: its CPU smoke mode runs every
part and writes the JSON a GPU run writes, and its time budgets stop a part that overruns
and skip what the suite has no time left for, the JSON still written."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("generation", "medqa", "judge", "training")
# the figures each part reports, and their types (bool is no number here)
NUMBERS: dict[str, dict[str, type]] = {
    "generation": {"questions": int, "batch_size": int, "tokens": int, "tokens_per_s": float},
    "medqa": {"questions": int, "batch_size": int, "questions_per_s": float},
    "judge": {"answers": int, "criteria": int, "answers_per_s": float},
    "training": {"steps": int, "tokens_per_s": float, "parameters": int},
}


def suite_script(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The script as a module (its dataclasses look their module up in sys.modules)."""
    spec = importlib.util.spec_from_file_location("gpu_suite", ROOT / "benchmarks" / "gpu_suite.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_suite", script)
    spec.loader.exec_module(script)
    return script


def test_the_smoke_run_writes_every_part_with_its_figures(
    fixture_data: Path, tiny_llama: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out" / "gpu_suite.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_suite.py"), "--smoke",
         "--model-shape", str(tiny_llama), "--out", str(out)],
        capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path,
        env={**os.environ, "MEDHARNESS_DATA_DIR": str(fixture_data),
             "MEDHARNESS_CACHE": str(tmp_path / "cache")},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["smoke"] is True and figures["device"] == "CPU"
    assert figures["dtype"] == "float32"
    assert list(figures["parts"]) == list(PARTS)
    for name, wanted in NUMBERS.items():
        part = figures["parts"][name]
        assert part["status"] == "ok", (name, part)
        for key, kind in wanted.items():
            assert type(part[key]) is kind and part[key] > 0, (name, key, part[key])
    generation = figures["parts"]["generation"]
    assert generation["questions"] == 4
    assert generation["tokens"] <= 4 * generation["max_new_tokens"]
    # the seconds are rounded to 0.01 and a smoke run generates in a few hundredths: the
    # rate must lie between the rates of the rounding interval's two ends
    seconds, tokens = generation["generation_s"], generation["tokens"]
    slowest, fastest = tokens / (seconds + 0.005), tokens / max(seconds - 0.005, 1e-9)
    assert slowest - 0.05 <= generation["tokens_per_s"] <= fastest + 0.05
    assert figures["parts"]["medqa"]["questions"] == 4
    assert figures["parts"]["judge"]["answers"] == 2
    training = figures["parts"]["training"]
    assert training["steps"] == 2 and training["precision"] == "fp32"
    assert training["mfu"] is None  # no peak FLOP/s is known for a CPU
    assert figures["wall_s"] < figures["budget_s"]


def test_budgets_stop_an_overrunning_part_and_skip_what_no_time_is_left_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = suite_script(monkeypatch)

    def endless(suite: Any) -> dict[str, Any]:
        time.sleep(30)
        return {}

    def broken(suite: Any) -> dict[str, Any]:
        raise ValueError("no such file\nsecond line")

    def slow(suite: Any) -> dict[str, Any]:
        time.sleep(1.4)
        return {"answers": 3}

    parts = {"generation": endless, "medqa": broken, "judge": slow, "training": endless}
    monkeypatch.setattr(script, "PARTS", parts)
    monkeypatch.setattr(script, "PART_BUDGETS_S", dict.fromkeys(parts, 5.0) | {"generation": 0.3})
    monkeypatch.setattr(script, "MIN_PART_S", 0.5)
    monkeypatch.setattr(script, "DEFAULT_BUDGET_S", 2.0)
    out = tmp_path / "figures.json"
    figures: dict[str, Any] = {"smoke": True}
    started = time.monotonic()
    script.run_suite(figures, lambda: SimpleNamespace(release=lambda: None), out, 2.0)
    assert time.monotonic() - started < 5
    written = json.loads(out.read_text())
    assert written == figures
    parts_found = written["parts"]
    assert parts_found["generation"] == {
        "status": "skipped",
        "reason": "stopped at its time budget of 0.3 s",
    }
    assert parts_found["medqa"] == {"status": "failed", "reason": "ValueError: no such file"}
    assert parts_found["judge"]["status"] == "ok" and parts_found["judge"]["answers"] == 3
    assert parts_found["training"] == {
        "status": "skipped",
        "reason": "the suite's budget of 2 s was spent before it",
    }


def test_a_failed_preparation_fails_every_part_with_its_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = suite_script(monkeypatch)

    def no_data() -> Any:
        raise KeyError("MEDHARNESS_DATA_DIR")

    figures: dict[str, Any] = {}
    script.run_suite(figures, no_data, tmp_path / "figures.json", 60.0)
    written = json.loads((tmp_path / "figures.json").read_text())
    reason = "preparation failed: KeyError: 'MEDHARNESS_DATA_DIR'"
    assert written["parts"] == {part: {"status": "failed", "reason": reason} for part in PARTS}
