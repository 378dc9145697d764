"""The release gate on real run directories made with scripted models: exit codes, JUnit,
Markdown, comparability, sample minimums, and the regression test's arithmetic."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jsonschema
import pytest
import yaml
from conftest import MEDQA_ROWS, write_fixture_data
from scipy import stats

from medharness.cli import main
from medharness.core.records import GenerationRow
from medharness.reports.gate import load_policy
from medharness.reports.gate_statistics import paired_drop

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
    "policy-mixed-formats": (
        {"tasks": {"medqa_4opt": {"required": True}}, "floors": {"medqa_4opt.acc": 0.5}},
        "a policy has either tasks: (margins and tiers) or the older floors:",
    ),
    "policy-bad-percentage": (
        {"tasks": {"medqa_4opt": {"metrics": {"acc": {"max_relative_drop": 5}}}}},
        "tasks.medqa_4opt.metrics.acc.max_relative_drop: 5 is not a percentage",
    ),
    "policy-bad-tier": (
        {"tasks": {"medqa_4opt": {"tier": "important"}}},
        "tasks.medqa_4opt.tier: Input should be 'critical', 'supporting' or 'advisory'",
    ),
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
    kinds = {(rule.kind, rule.tier) for rule in policy.rules()}
    assert {("max_drop", "critical"), ("floor", "critical")} <= kinds
    assert {("max_relative_drop", "supporting"), ("max_drop", "advisory")} <= kinds
    assert policy.required() == ["medqa_4opt", "medquad_gen"] and not policy.legacy
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


# --- margins, tiers and required tasks on constructed runs of 400 MedQA questions ---


def answering(wrong: list[tuple[int, int]]) -> dict[str, Any]:
    """A fake model right on every question except copy k of MedQA row i for each (i, k)."""
    rules = [
        {"match": f"symptom {i}. What is the diagnosis? (copy {k})", "answer": WRONG[i]["answer"]}
        for i, k in wrong
    ]
    return {"choose": [*rules, *RIGHT], "babble_words": 12}


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("gate400")
    write_fixture_data(folder / "data", scale=50)  # 400 MedQA test questions
    scripts = {
        "right": answering([]),
        "near": answering([(0, 1), (1, 1)]),  # 2 of 400 wrong: a drop of 0.5 points
        "worse": answering([(i, k) for i in range(8) for k in range(1, 11)]),  # 80 wrong
    }
    for name, script in scripts.items():
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(script), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def near_run(big: Path) -> Path:
    return make_run(big, "run-near", {"base": "right", "candidate": "near"})


@pytest.fixture(scope="module")
def worse_run(big: Path) -> Path:
    return make_run(big, "run-worse", {"base": "right", "candidate": "worse"})


@pytest.fixture(scope="module")
def tiny_run(big: Path) -> Path:
    # the first 10 questions: rows 0-7 and copy 1 of rows 0 and 1, which "worse" gets wrong
    return make_run(big, "tiny", {"base": "right", "candidate": "worse"}, limit=10)


def margin_policy(rules: dict[str, Any], **settings: Any) -> dict[str, Any]:
    return {"tasks": {"medqa_4opt": {"required": True, "metrics": {"acc": rules}}}, **settings}


def judge(work: Path, run: Path, policy: dict[str, Any]) -> tuple[int, dict[str, Any], str]:
    """Exit code, the JSON decision and the Markdown of gating ``run`` by ``policy``."""
    out, markdown = work / "gate.json", work / "gate.md"
    code = main(
        [
            "gate",
            str(run),
            "--policy",
            str(write_policy(work, policy, "margins.yaml")),
            "--json",
            str(out),
            "--markdown",
            str(markdown),
        ]
    )
    return code, json.loads(out.read_text()), markdown.read_text(encoding="utf-8")


def verdicts(decision: dict[str, Any]) -> list[tuple[str, str]]:
    return [(rule["verdict"], rule["effect"]) for rule in decision["rules"]]


def test_a_tiny_run_with_a_large_drop_is_inconclusive_where_the_old_rule_passed_it(
    big: Path, tiny_run: Path
) -> None:
    code, decision, markdown = judge(big, tiny_run, margin_policy({"max_drop": 3}))
    assert code == 1 and decision["decision"] == "BLOCKED"
    (rule,) = decision["rules"]
    assert (rule["verdict"], rule["effect"], rule["n"]) == ("INCONCLUSIVE", "blocks", 10)
    assert rule["estimate"] == pytest.approx(20.0)  # 2 of 10 questions lost
    low, high = rule["interval"]
    assert low < 3 < high and rule["questions_needed"] > 10
    assert "contains the margin" in rule["evidence"] and "❔ INCONCLUSIVE" in markdown
    # the significant-regression rule, still available by name, lets the same run through
    code, decision, _ = judge(big, tiny_run, margin_policy({"max_significant_drop": 3}))
    assert code == 0 and verdicts(decision) == [("PASS", "none")]


def test_a_large_run_with_a_drop_inside_the_margin_passes(big: Path, near_run: Path) -> None:
    code, decision, _ = judge(big, near_run, margin_policy({"max_drop": 3}))
    assert code == 0 and decision["decision"] == "PASS"
    (rule,) = decision["rules"]
    assert rule["verdict"] == "PASS" and rule["estimate"] == pytest.approx(0.5)
    assert rule["interval"][1] < 3 and rule["interval_method"] == "Tango score interval"
    # the rule reads as what it checks, whatever the verdict
    assert rule["name"] == "medqa_4opt.acc is at most 3 points below the baseline"
    assert rule["evidence"].startswith("drop +0.50 points, baseline 1.0000 vs candidate 0.9950")
    assert "the whole interval is below the margin" in rule["evidence"]


def test_a_large_run_clearly_worse_fails(big: Path, worse_run: Path) -> None:
    code, decision, _ = judge(big, worse_run, margin_policy({"max_drop": 3}))
    assert code == 1 and verdicts(decision) == [("FAIL", "blocks")]
    assert decision["rules"][0]["interval"][0] > 3


def test_relative_margin_is_a_share_of_the_baseline(big: Path, near_run: Path) -> None:
    code, decision, _ = judge(big, near_run, margin_policy({"max_relative_drop": "5%"}))
    assert code == 0 and decision["rules"][0]["threshold"] == pytest.approx(5.0)  # of 100
    code, decision, _ = judge(big, near_run, margin_policy({"max_relative_drop": "1%"}))
    assert code == 1 and verdicts(decision) == [("INCONCLUSIVE", "blocks")]


def test_a_required_task_missing_is_missing_and_blocks(big: Path, near_run: Path) -> None:
    policy = margin_policy({"max_drop": 3})
    policy["tasks"]["pubmedqa"] = {"required": True, "metrics": {"acc": {"max_drop": 3}}}
    code, decision, markdown = judge(big, near_run, policy)
    assert code == 1 and verdicts(decision) == [("PASS", "none"), ("MISSING", "blocks")]
    assert "⛔ MISSING" in markdown
    policy["tasks"]["pubmedqa"]["required"] = False  # not required: reported, not blocking
    code, decision, _ = judge(big, near_run, policy)
    assert code == 0 and verdicts(decision) == [("PASS", "none"), ("MISSING", "warns")]


def test_advisory_failure_passes_with_a_warning(
    big: Path, worse_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    code, decision, markdown = judge(
        big, worse_run, margin_policy({"max_drop": 3, "tier": "advisory"})
    )
    assert code == 0 and verdicts(decision) == [("FAIL", "warns")]
    assert capsys.readouterr().out.startswith("medharness gate PASSED with 1 warning")
    assert "❌ FAIL (advisory, warning)" in markdown


def test_inconclusive_blocks_only_critical_rules_and_only_when_the_policy_says_so(
    big: Path, tiny_run: Path
) -> None:
    supporting = margin_policy({"max_drop": 3, "tier": "supporting"})
    assert judge(big, tiny_run, supporting)[0] == 0
    lenient = margin_policy({"max_drop": 3}, inconclusive_blocks=False)
    code, decision, _ = judge(big, tiny_run, lenient)
    assert code == 0 and verdicts(decision) == [("INCONCLUSIVE", "warns")]


def test_a_floor_judges_the_candidates_interval(big: Path, tiny_run: Path) -> None:
    # the candidate has 8 of 10 right: Clopper-Pearson 95% interval 0.444 to 0.975
    low, high = stats.binomtest(8, 10).proportion_ci(method="exact")
    for floor, verdict in ((0.3, "PASS"), (0.7, "INCONCLUSIVE"), (0.99, "FAIL")):
        code, decision, _ = judge(big, tiny_run, margin_policy({"floor": floor}))
        (rule,) = decision["rules"]
        assert rule["verdict"] == verdict and code == (0 if verdict == "PASS" else 1)
        assert rule["interval"] == pytest.approx([low, high])


def test_outputs_carry_verdicts_evidence_and_the_decision(big: Path, worse_run: Path) -> None:
    policy = margin_policy({"max_drop": 3, "floor": 0.5})
    code, decision, markdown = judge(big, worse_run, policy)
    schema = json.loads((ROOT / "docs/schemas/gate.schema.json").read_text())
    jsonschema.validate(decision, schema)
    assert code == 1 and [r["verdict"] for r in decision["rules"]] == ["PASS", "FAIL"]
    junit = big / "junit.xml"
    main(["gate", str(worse_run), "--policy", str(big / "margins.yaml"), "--junit", str(junit)])
    root = ET.parse(junit).getroot()
    assert root.find(".//property[@name='decision']").get("value") == "BLOCKED"
    failure = root.find(".//failure")
    assert failure is not None and failure.get("message", "").startswith("FAIL (critical, blocks)")
    assert "| ✅ PASS (critical) | medqa_4opt.acc is at least 0.5 |" in markdown


def test_markdown_lists_the_questions_that_flipped_with_links_into_the_viewer(
    big: Path, worse_run: Path
) -> None:
    _, decision, markdown = judge(big, worse_run, margin_policy({"max_drop": 3}))
    logs = [
        [json.loads(line) for line in (worse_run / f"samples/{m}/medqa_4opt.jsonl").open()]
        for m in ("base", "candidate")
    ]
    lost = [
        b["doc_id"]
        for b, c in zip(*logs, strict=True)
        if b["metrics"]["acc"] and not c["metrics"]["acc"]
    ]
    assert len(lost) == 80
    (flips,) = decision["flips"]
    assert flips["right_to_wrong"] == lost and flips["wrong_to_right"] == []
    assert "**medqa_4opt**: 80 right → wrong, 0 wrong → right" in markdown
    link = f"[{lost[0]}](http://127.0.0.1:7860/?task=medqa_4opt&doc={quote(lost[0])})"
    assert link in markdown and "and 75 more" in markdown


def test_plan_gate_gives_the_normal_approximation_at_the_baselines_spread(
    big: Path, near_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = write_policy(big, margin_policy({"max_drop": 3, "floor": 0.9}), "plan.yaml")
    capsys.readouterr()
    assert main(["plan-gate", "--policy", str(policy), "--baseline", str(near_run)]) == 0
    out = capsys.readouterr().out
    # baseline: 400 of 400 right; one pseudo-success and one pseudo-failure give the spread
    rate = 401 / 402
    spread = math.sqrt(rate * (1 - rate))
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    margin_n = math.ceil((z * math.sqrt(2) * spread * 100 / 3) ** 2)
    floor_n = math.ceil((z * spread / (1.0 - 0.9)) ** 2)
    assert f"{margin_n:,} questions  medqa_4opt.acc is at most 3 points below" in out
    assert f"{floor_n:,} questions  medqa_4opt.acc is at least 0.9" in out


def test_the_example_policy_on_a_quickstart_sized_run_is_inconclusive_with_a_size(
    work: Path,
) -> None:
    """40 MedQA questions on which two models agree everywhere cannot show a 3-point margin:
    Tango's interval is +-z^2/(n+z^2) = +-8.8 points; the evidence sizes the run that can."""
    run = make_run(work, "quick40", {"base": "right", "candidate": "right"}, limit=40)
    out = work / "example.json"
    code = main(
        ["gate", str(run), "--policy", str(ROOT / "examples/gate.yaml"), "--json", str(out)]
    )
    rules = {rule["name"]: rule for rule in json.loads(out.read_text())["rules"]}
    margin = rules["medqa_4opt.acc is at most 3 points below the baseline"]
    assert code == 1 and (margin["verdict"], margin["effect"]) == ("INCONCLUSIVE", "blocks")
    z = stats.norm.ppf(0.975)
    assert margin["interval"] == pytest.approx(
        [-100 * z**2 / (40 + z**2), 100 * z**2 / (40 + z**2)]
    )
    # no flip seen: the spread counts one in n + 2 questions
    spread = 100 * math.sqrt(1 / 42)
    needed = math.ceil(((z + stats.norm.ppf(0.8)) * spread / 3) ** 2)
    assert (
        margin["questions_needed"] == needed and f"about {needed} questions" in margin["evidence"]
    )
    assert rules["medqa_4opt.acc is at least 0.25"]["verdict"] == "PASS"
