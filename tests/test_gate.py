"""The release gate on real run directories made with scripted models: exit codes, JUnit,
Markdown, comparability, sample minimums, and the regression test's arithmetic."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import MEDQA_ROWS, write_fixture_data

from medharness.cli import main
from medharness.core.records import GenerationRow
from medharness.reports.gate import load_policy, paired_drop

ROOT = Path(__file__).resolve().parent.parent
RIGHT = [
    {"match": f"symptom {i}.", "answer": row["answer_idx"]} for i, row in enumerate(MEDQA_ROWS)
]
WRONG = [
    {"match": rule["match"], "answer": "D" if rule["answer"] != "D" else "A"} for rule in RIGHT
]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("gate")
    write_fixture_data(folder / "data", scale=20)  # 160 MedQA test questions
    for name, rules in (("right", RIGHT), ("wrong", WRONG)):
        (folder / f"{name}.yaml").write_text(
            yaml.safe_dump({"choose": rules, "babble_words": 12}), encoding="utf-8"
        )
    return folder


def make_run(work: Path, name: str, models: dict[str, str], limit: int | None = None) -> Path:
    config = {
        "name": name,
        "data_dir": str(work / "data"),
        "bootstrap_resamples": 1000,
        "models": [
            {"name": label, "model": f"fake:{work / script}.yaml"}
            for label, script in models.items()
        ],
        "tasks": [{"name": "medqa_4opt", "limit": limit}, {"name": "medquad_gen", "limit": 20}],
    }
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    assert main(["run", str(path), "--out", str(work / "runs")]) == 0
    return work / "runs" / name


def write_policy(work: Path, policy: dict[str, Any], name: str = "policy.yaml") -> Path:
    path = work / name
    path.write_text(yaml.safe_dump(policy), encoding="utf-8")
    return path


POLICY = {
    "min_samples": 20,
    "required_tasks": ["medqa_4opt"],
    "floors": {"medqa_4opt.acc": 0.5},
    "regressions": {"medqa_4opt.acc": 2.0, "medquad_gen.rouge1": 5.0},
}


def gate(work: Path, run: Path, *extra: str) -> tuple[int, ET.Element | None, str | None]:
    """Exit code, JUnit root and Markdown text (None where the gate wrote none)."""
    junit, markdown = work / "junit.xml", work / "gate.md"
    junit.unlink(missing_ok=True)
    markdown.unlink(missing_ok=True)
    code = main(
        [
            "gate",
            str(run),
            "--policy",
            str(write_policy(work, POLICY)),
            "--junit",
            str(junit),
            "--markdown",
            str(markdown),
            *extra,
        ]
    )
    return (
        code,
        ET.parse(junit).getroot() if junit.exists() else None,
        markdown.read_text(encoding="utf-8") if markdown.exists() else None,
    )


@pytest.fixture(scope="module")
def same_run(work: Path) -> Path:
    return make_run(work, "same", {"base": "right", "candidate": "right"})


def test_identical_candidate_passes(work: Path, same_run: Path) -> None:
    run = same_run
    code, junit, markdown = gate(work, run)
    assert code == 0
    cases = junit.findall(".//testcase")
    assert len(cases) == 5 and not junit.findall(".//failure")
    assert "PASSED" in markdown and "❌" not in markdown and "✅ PASS" in markdown


def test_significantly_worse_candidate_fails_and_junit_names_the_rule(work: Path) -> None:
    run = make_run(work, "worse", {"base": "right", "candidate": "wrong"})
    code, junit, markdown = gate(work, run)
    assert code == 1
    failed = [
        case.get("name")
        for case in junit.findall(".//testcase")
        if case.find("failure") is not None
    ]
    significant = "medqa_4opt.acc is not significantly more than 2 points below the baseline"
    assert failed == ["medqa_4opt.acc >= 0.5", significant]
    assert junit.get("failures") == "2"
    assert "BLOCKED" in markdown and f"❌ FAIL (critical, blocks) | {significant}" in markdown


def test_stored_baseline_run_is_used_and_must_be_comparable(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    baseline = make_run(work, "stored", {"model": "right"})
    candidate = make_run(work, "next", {"model": "wrong"})
    assert gate(work, candidate, "--baseline", str(baseline))[0] == 1
    assert gate(work, baseline, "--baseline", str(baseline))[0] == 0
    other = make_run(work, "fewer", {"model": "right"}, limit=120)
    capsys.readouterr()
    assert gate(work, other, "--baseline", str(baseline)) == (2, None, None)
    err = capsys.readouterr().err
    assert "not comparable" in err and "sample_ids_sha256" in err


# id (as in docs/errors.md) -> (policy, words the one-line error must contain)
BAD_POLICIES: dict[str, tuple[dict[str, Any], str]] = {
    "policy-unknown-key": ({"floor": {"medqa_4opt.acc": 0.5}}, "floor: unknown key"),
    "unknown-metric": ({"floors": {"medqa_4opt.accuracy": 0.5}}, "unknown metric 'accuracy'"),
    "policy-unknown-task": ({"floors": {"medqa_9opt.acc": 0.5}}, "unknown task 'medqa_9opt'"),
    "policy-wrong-type": ({"floors": {"medqa_4opt.acc": "high"}}, "valid number"),
    "policy-bad-value": ({"alpha": 2}, "alpha: Input should be less than 0.5"),
}


@pytest.mark.parametrize("case_id", list(BAD_POLICIES))
def test_bad_policy_is_one_line_and_exit_2(
    work: Path, same_run: Path, case_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    policy, message = BAD_POLICIES[case_id]
    path = write_policy(work, policy, "bad.yaml")
    capsys.readouterr()
    assert main(["gate", str(same_run), "--policy", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_missing_run_is_exit_2(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gate", str(work / "nope"), "--policy", str(write_policy(work, POLICY))]) == 2
    assert "not a finished run directory" in capsys.readouterr().err


def test_too_few_samples_fail_instead_of_passing_quietly(work: Path) -> None:
    run = make_run(work, "tiny", {"base": "right", "candidate": "right"}, limit=10)
    code, junit, _ = gate(work, run)
    assert code == 1
    failure = junit.find(".//testcase[@name='medqa_4opt has at least 20 samples']/failure")
    assert failure is not None and "n = 10" in (failure.get("message") or "")


def test_significant_drop_rule_uses_the_one_sided_bound_and_the_allowed_drop() -> None:
    base = [
        GenerationRow(doc_id=str(i), target="", prediction="", metrics={"rouge1": 0.5 + i / 1000})
        for i in range(50)
    ]
    worse = [
        GenerationRow(doc_id=str(i), target="", prediction="", metrics={"rouge1": 0.49 + i / 1000})
        for i in range(50)
    ]
    # every paired difference is exactly -0.01 = a drop of 1 point, so every resample's too
    pair = paired_drop("rouge1", base, worse, resamples_and_seed=(500, 1))
    assert pair.drop == pytest.approx(1.0) and pair.drop_quantile(0.05) == pytest.approx(1.0)
    assert pair.interval == pytest.approx((1.0, 1.0))


def test_shipped_policy_and_ci_workflows_are_valid() -> None:
    policy = load_policy(ROOT / "examples" / "gate.yaml")
    assert policy.floors and policy.regressions
    for schema, path in (
        ("vendor.github-workflows", "examples/ci/github-actions.yml"),
        ("vendor.gitlab-ci", "examples/ci/gitlab-ci.yml"),
    ):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "check_jsonschema",
                "--builtin-schema",
                schema,
                str(ROOT / path),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
