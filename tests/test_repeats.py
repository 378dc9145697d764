"""Sampled decoding with repeats: every answer kept in the log, per-question means behind
every interval and paired test (clustered by question, not K x n answers), pass@k against
lm-eval's own estimator, the majority vote, seeded answers that a rerun draws again, the
gate on per-question means, and the bad inputs."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import REAL_DATA, write_fixture_data
from openai_stub import StubState, serve
from scipy import stats
from scipy.special import comb
from statsmodels.stats.proportion import proportion_confint
from test_endpoint import write_config

from medharness.cli import main
from medharness.config import parse_config
from medharness.core.errors import UserError
from medharness.core.records import SAMPLE_ROWS, ChoiceRow, GenerationRow, SampleRow
from medharness.core.rundir import RESCORING
from medharness.models.base import Sampling
from medharness.reports.compare import compare_task
from medharness.reports.gate_statistics import paired_drop
from medharness.tasks.metrics.repeats import majority_vote, pass_at_k

LM_EVAL_CRUXEVAL = "lm_eval/tasks/cruxeval/utils.py"
K = 5
RESAMPLES = 500


def lm_eval_pass_at_k() -> Any:
    """lm-eval's own ``_pass_at_k`` (its cruxeval task; the human-eval estimator), loaded
    from its file alone (the lm_eval package takes seconds to import)."""
    import lm_eval

    path = Path(lm_eval.__file__).parent.parent / LM_EVAL_CRUXEVAL
    spec = importlib.util.spec_from_file_location("cruxeval_utils", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module._pass_at_k


def test_pass_at_k_equals_lm_evals_estimator_and_the_binomial_formula() -> None:
    reference = lm_eval_pass_at_k()
    for n in range(1, 13):
        for c in range(n + 1):
            for k in range(1, n + 1):
                ours = pass_at_k(n, c, k)
                assert ours == pytest.approx(float(reference(n, c, k)), abs=1e-12)
                exact = 1 - comb(n - c, k, exact=True) / comb(n, k, exact=True)
                assert ours == pytest.approx(exact, abs=1e-12)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


# votes (option index, -1: the answer named none) -> the majority vote
VOTES = [
    ([1, 1, 0], 1),
    ([2, 0, 2, 0], 2),  # a tie: the option drawn first
    ([0, 2, 2, 0], 0),
    ([3, -1, -1, -1], 3),  # answers naming none do not vote
    ([-1, -1], -1),  # nobody voted
    ([1, 0, 0, 1, -1, -1, -1], 1),
    ([0, 1, 2, 3, 3], 3),
]


@pytest.mark.parametrize(("votes", "expected"), VOTES)
def test_majority_vote_on_constructed_tables(votes: list[int], expected: int) -> None:
    assert majority_vote(votes) == expected
    valid = [vote for vote in votes if vote >= 0]
    # statistics.multimode lists the modes in the order they first occur
    assert majority_vote(votes) == (statistics.multimode(valid)[0] if valid else -1)


SCRIPT = {
    "generate": [
        {"match": "Answer with", "output": "A", "sampled": ["A", "B", "C", "D", "no idea"]},
    ],
    "default_output": "Ask a doctor about it.",
    "babble_words": 6,
}


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("repeats")
    write_fixture_data(folder / "data", scale=5)  # 40 MedQA questions
    (folder / "fake.yaml").write_text(yaml.safe_dump(SCRIPT), encoding="utf-8")
    return folder


def sampled_entry(work: Path, name: str, **sampling: Any) -> dict[str, Any]:
    settings = {"repeats": K, "temperature": 0.8, **sampling}
    return {
        "name": name,
        "model": f"fake:{work / 'fake.yaml'}",
        "multiple_choice": "generate",
        "sampling": settings,
    }


def run_config(work: Path, name: str, models: list[dict[str, Any]], **extra: Any) -> Path:
    config = {
        "name": name,
        "data_dir": str(work / "data"),
        "bootstrap_resamples": RESAMPLES,
        "models": models,
        "tasks": [{"name": "medqa_4opt"}, {"name": "medquad_gen", "limit": 6}],
        **extra,
    }
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def run(work: Path, config: Path, out: str = "runs") -> int:
    return main(["run", str(config), "--out", str(work / out)])


@pytest.fixture(scope="module")
def sampled_run(work: Path) -> Path:
    models = [sampled_entry(work, "base", seed=1), sampled_entry(work, "cand", seed=2)]
    assert run(work, run_config(work, "sampled", models)) == 0
    return work / "runs" / "sampled"


def rows_of(run_dir: Path, model: str, task: str) -> list[SampleRow]:
    path = run_dir / "samples" / model / f"{task}.jsonl"
    return SAMPLE_ROWS.validate_python([json.loads(line) for line in path.open()])


def results_of(run_dir: Path) -> dict[str, Any]:
    results: dict[str, Any] = json.loads((run_dir / "results.json").read_text())["results"]
    return results


def numpy_bootstrap(values: np.ndarray, seed: int) -> tuple[float, float]:
    """The percentile bootstrap of a mean, written out with numpy alone."""
    draws = np.random.default_rng(seed).integers(0, len(values), size=(RESAMPLES, len(values)))
    low, high = np.quantile(values[draws].mean(axis=1), [0.025, 0.975])
    return float(low), float(high)


def accuracy_drops(base: list[SampleRow], cand: list[SampleRow]) -> np.ndarray:
    """Each question's mean accuracy, baseline minus candidate (the logs share their order)."""
    assert [row.doc_id for row in base] == [row.doc_id for row in cand]
    return np.array([b.metrics["acc"] - c.metrics["acc"] for b, c in zip(base, cand, strict=True)])


def test_each_row_keeps_every_answer_and_scores_their_mean(sampled_run: Path) -> None:
    reference = lm_eval_pass_at_k()
    rows = rows_of(sampled_run, "base", "medqa_4opt")
    assert len(rows) == 40
    for row in rows:
        assert isinstance(row, ChoiceRow) and row.repeats is not None and len(row.repeats) == K
        chosen = [answer.chosen for answer in row.repeats]
        right = [int(vote == row.gold) for vote in chosen]
        assert all(answer.chosen is not None for answer in row.repeats)
        assert row.metrics["acc"] == pytest.approx(np.mean(right))
        assert row.metrics["pass_at_k"] == pytest.approx(reference(K, sum(right), K))
        valid = [vote for vote in chosen if vote is not None and vote >= 0]
        vote = statistics.multimode(valid)[0] if valid else -1
        assert row.chosen == vote and row.metrics["majority_acc"] == float(vote == row.gold)
        invalid = [answer.extracted_by == "none" for answer in row.repeats]
        assert row.metrics["invalid_answer"] == pytest.approx(np.mean(invalid))
    assert len({answer.seed for row in rows for answer in row.repeats}) == 40 * K
    free = rows_of(sampled_run, "base", "medquad_gen")
    for row in free:
        assert isinstance(row, GenerationRow) and row.repeats is not None
        assert row.prediction == row.repeats[0].answer
        rouge = [answer.metrics["rouge1"] for answer in row.repeats]
        assert row.metrics["rouge1"] == pytest.approx(np.mean(rouge))


def test_intervals_are_clustered_by_question(sampled_run: Path) -> None:
    result = results_of(sampled_run)["base"]["medqa_4opt"]
    rows = rows_of(sampled_run, "base", "medqa_4opt")
    means = np.array([row.metrics["acc"] for row in rows])
    assert result["n"] == 40 and result["settings"]["repeats"] == K
    assert result["metrics"]["acc"]["value"] == pytest.approx(means.mean())
    assert result["metrics"]["acc"]["ci95"] == pytest.approx(numpy_bootstrap(means, 1234))
    # not the interval of K x n answers taken as independent
    answers = [a.metrics["acc"] for row in rows if row.repeats for a in row.repeats]
    flat = proportion_confint(int(sum(answers)), len(answers), method="beta")
    assert result["metrics"]["acc"]["ci95"] != pytest.approx(flat, abs=1e-3)
    passes = [row.metrics["pass_at_k"] for row in rows]
    exact = proportion_confint(int(sum(passes)), 40, method="beta")
    assert result["metrics"]["pass_at_k"]["ci95"] == pytest.approx(exact)
    majority = [row.metrics["majority_acc"] for row in rows]
    assert result["metrics"]["majority_acc"]["value"] == pytest.approx(np.mean(majority))
    report = (sampled_run / "report.html").read_text(encoding="utf-8")
    assert "pass_at_k" in report and "majority_acc" in report


def test_compare_pairs_per_question_means(sampled_run: Path) -> None:
    base = rows_of(sampled_run, "base", "medqa_4opt")
    cand = rows_of(sampled_run, "cand", "medqa_4opt")
    found = compare_task(
        "medqa_4opt", "base", "cand", base, cand, ["acc", "pass_at_k"], resamples=RESAMPLES
    )
    tests = {c.metric: c for c in found}
    assert tests["acc"].test.startswith("paired bootstrap") and tests["acc"].n == 40
    assert tests["pass_at_k"].test == "McNemar exact"
    differences = -accuracy_drops(base, cand)
    assert tests["acc"].ci95 == pytest.approx(numpy_bootstrap(differences, 1234))
    assert tests["acc"].difference == pytest.approx(differences.mean())


def test_gate_judges_per_question_means(sampled_run: Path, work: Path) -> None:
    policy = work / "gate.yaml"
    policy.write_text(
        yaml.safe_dump({"tasks": {"medqa_4opt": {"metrics": {"acc": {"max_drop": 60}}}}}),
        encoding="utf-8",
    )
    decision = work / "gate.json"
    assert main(["gate", str(sampled_run), "--policy", str(policy), "--json", str(decision)]) == 0
    rule = next(r for r in json.loads(decision.read_text())["rules"] if r["kind"] == "max_drop")
    assert rule["verdict"] == "PASS" and rule["n"] == 40
    assert "bootstrap" in rule["interval_method"]
    base = rows_of(sampled_run, "base", "medqa_4opt")
    cand = rows_of(sampled_run, "cand", "medqa_4opt")
    drops = 100 * accuracy_drops(base, cand)
    assert rule["estimate"] == pytest.approx(drops.mean())
    assert rule["interval"] == pytest.approx(numpy_bootstrap(drops, 1234))
    direct = paired_drop("acc", base, cand, resamples_and_seed=(RESAMPLES, 1234))
    assert direct.n == 40 and direct.interval == pytest.approx(rule["interval"])


def test_answers_are_seeded_per_question_and_reused_until_the_decoding_changes(
    work: Path, sampled_run: Path
) -> None:
    trace = work / "calls.log"
    traced = work / "traced.yaml"
    traced.write_text(yaml.safe_dump({**SCRIPT, "trace_file": str(trace)}), encoding="utf-8")
    entry = {**sampled_entry(work, "base", seed=1), "model": f"fake:{traced}"}
    config = run_config(work, "again", [entry])
    assert run(work, config) == 0
    again = work / "runs" / "again"
    # another script file, the same answers: each drawn from its own seed
    assert rows_of(again, "base", "medqa_4opt") == rows_of(sampled_run, "base", "medqa_4opt")
    # a question's answers do not depend on what else was asked with it
    few = run_config(work, "few", [entry], limit=3)
    assert run(work, few) == 0
    firsts = {row.doc_id: row for row in rows_of(sampled_run, "base", "medqa_4opt")}
    for row in rows_of(work / "runs" / "few", "base", "medqa_4opt"):
        assert row == firsts[row.doc_id]
    trace.unlink()
    assert run(work, config) == 0  # unchanged: the finished logs are reused
    assert not trace.exists()
    for change in ({"temperature": 0.5}, {"repeats": 3}, {"seed": 7}):
        changed = {**entry, "sampling": {**entry["sampling"], **change}}
        assert run(work, run_config(work, "again", [changed])) == 0
        asked = trace.read_text().count("generate\t")
        assert asked == 40 * changed["sampling"]["repeats"] + 6 * changed["sampling"]["repeats"]
        trace.unlink()


def test_a_killed_run_resumes_with_the_answers_it_would_have_drawn(
    work: Path, sampled_run: Path
) -> None:
    release = work / "release"
    held = work / "held.yaml"
    script = {**SCRIPT, "hold": {"after": 1, "until": str(release), "kind": "generate"}}
    held.write_text(yaml.safe_dump(script), encoding="utf-8")
    entry = {**sampled_entry(work, "base", seed=1), "model": f"fake:{held}"}
    config = run_config(work, "resumed", [entry])
    command = [sys.executable, "-m", "medharness", "run", str(config), "--out", str(work / "k")]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not any(work.glob("release.held.*")):  # the second chunk's call is waiting
        assert process.poll() is None and time.time() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = next((work / "k").glob("*/samples/base/medqa_4opt.jsonl.partial"))
    kept = len(partial.read_text().splitlines())
    assert 0 < kept < 40  # the first chunk was written, the rest not
    release.touch()
    assert run(work, config, out="k") == 0
    resumed = rows_of(work / "k" / "resumed", "base", "medqa_4opt")
    assert resumed == rows_of(sampled_run, "base", "medqa_4opt")


# id (as in docs/errors.md) -> (changes to the first model entry, what the one line says)
REPEATS_CASES: dict[str, tuple[dict[str, Any], str]] = {
    "repeats-greedy": (
        {"sampling": {"repeats": 4}},
        "models.0.sampling: repeats: 4 needs a temperature above 0",
    ),
    "repeats-loglikelihood": (
        {"multiple_choice": "loglikelihood", "sampling": {"repeats": 4, "temperature": 0.7}},
        "models.0: sampling.repeats needs multiple_choice: generate or cot",
    ),
    "repeats-judged": (
        {"judges": True},
        "model base: the jury judges one answer per question",
    ),
}


@pytest.mark.parametrize("case", sorted(REPEATS_CASES))
def test_bad_repeats_are_one_line_errors(
    case: str, work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    changes, says = REPEATS_CASES[case]
    entry = {**sampled_entry(work, "base"), **changes}
    extra: dict[str, Any] = {}
    if entry.pop("judges", False):
        extra["judges"] = [{"name": "judge", "model": f"fake:{work / 'fake.yaml'}"}]
    config = run_config(work, f"bad-{case}", [entry], **extra)
    capsys.readouterr()
    assert run(work, config, out="bad") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("medharness: error: ")
    assert str(config) in err and says in err
    assert not (work / "bad" / f"bad-{case}").exists()


def test_a_judge_decodes_greedily(work: Path) -> None:
    judge = {**sampled_entry(work, "judge"), "multiple_choice": "loglikelihood"}
    judge["sampling"] = {"temperature": 0.5}
    config = {"name": "judged", "models": [{"name": "a", "model": "x"}], "tasks": ["pubmedqa"]}
    with pytest.raises(UserError, match=r"^j\.yaml: \(top level\): judges decode greedily"):
        parse_config({**config, "judges": [judge]}, "j.yaml")


def test_transformers_sampling_is_seeded_per_batch(tiny_llama: Path) -> None:
    from medharness.models.loading import load_model

    model = load_model(str(tiny_llama), backend="hf", dtype="float32", batch_size=4)
    messages = ["What is asthma?", "Hi", "What is asthma?", "Hi"]
    greedy = model.complete(messages, 6)
    seeds = Sampling(temperature=1.5, top_p=1.0, seeds=(1, 2, 3, 4))
    first = model.complete(messages, 6, sampling=seeds)
    assert model.complete(messages, 6, sampling=seeds) == first  # reproducible
    assert model.complete(messages, 6) == greedy  # greedy untouched by sampling before it
    other = model.complete(messages, 6, sampling=Sampling(1.5, 1.0, (5, 6, 7, 8)))
    assert [c.text for c in other] != [c.text for c in first]
    assert first[0].text != first[2].text or first[1].text != first[3].text


def test_rescoring_scores_every_sampled_answer(sampled_run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(sampled_run, copy)
    log = copy / "samples" / "base" / "medquad_gen.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    for row in rows:  # scores a rescore must recompute, of the row and of each answer
        row["metrics"]["rouge1"] = 0.0
        for answer in row["repeats"]:
            answer["metrics"]["rouge1"] = 0.0
    log.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    (copy / RESCORING).write_text("a rescore was writing\n")  # the log disagrees for now
    assert main(["rescore", str(copy), "--metrics", "rouge1"]) == 0
    assert rows_of(copy, "base", "medquad_gen") == rows_of(sampled_run, "base", "medquad_gen")
    assert results_of(copy) == results_of(sampled_run)


def test_the_manifest_and_an_lm_eval_export_carry_every_answer(
    sampled_run: Path, tmp_path: Path
) -> None:
    manifest = json.loads((sampled_run / "manifest.json").read_text())
    assert manifest["decoding"]["strategy"] == (
        "greedy; sampled: base (repeats 5, temperature 0.8, top_p 1, seed 1), "
        "cand (repeats 5, temperature 0.8, top_p 1, seed 2)"
    )
    out = tmp_path / "lm-eval"
    assert main(["export", str(sampled_run), "--format", "lm-eval", "-o", str(out)]) == 0
    [samples] = [p for p in out.rglob("samples_medqa_4opt_*.jsonl") if "/base/" in str(p)]
    exported = [json.loads(line) for line in samples.read_text().splitlines()]
    rows = {row.doc_id: row for row in rows_of(sampled_run, "base", "medqa_4opt")}
    for line, row in zip(exported, rows.values(), strict=True):
        assert row.repeats is not None
        assert line["resps"] == [[answer.answer for answer in row.repeats]]
        assert line["arguments"]["gen_args_0"]["arg_1"]["do_sample"] is True


def test_a_served_model_is_sent_the_temperature_and_each_answers_seed(
    tmp_path: Path, fixture_data: Path
) -> None:
    with contextlib.closing(serve(StubState())) as served:
        stub = next(served)
        sampling = {"repeats": 3, "temperature": 0.9, "top_p": 0.5, "seed": 4}
        config = write_config(
            tmp_path, stub, fixture_data, multiple_choice="generate", sampling=sampling
        )
        assert main(["run", str(config)]) == 0
        bodies = [request["body"] for request in stub.state.completions()]
        logged = rows_of(tmp_path / "runs" / "endpoint", "served", "medqa_4opt")
        seeds = [answer.seed for row in logged if row.repeats for answer in row.repeats]
        assert len(bodies) == len(seeds) == 3 * len(logged)
        assert sorted(body["seed"] for body in bodies) == sorted(seeds)
        assert {(body["temperature"], body["top_p"]) for body in bodies} == {(0.9, 0.5)}


def test_plan_gate_sizes_a_run_at_the_spread_of_per_question_means(
    sampled_run: Path, work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = work / "plan.yaml"
    policy.write_text(
        yaml.safe_dump({"tasks": {"medqa_4opt": {"metrics": {"acc": {"max_drop": 5}}}}}),
        encoding="utf-8",
    )
    capsys.readouterr()
    assert main(["plan-gate", "--policy", str(policy), "--baseline", str(sampled_run)]) == 0
    out = capsys.readouterr().out
    means = np.array([row.metrics["acc"] for row in rows_of(sampled_run, "base", "medqa_4opt")])
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    needed = int(np.ceil((z * np.sqrt(2) * means.std() * 100 / 5) ** 2))
    assert f"{needed:,} questions  medqa_4opt.acc is at most 5 points below" in out


@pytest.mark.slow
@pytest.mark.skipif(REAL_DATA is None, reason="needs MEDHARNESS_DATA_DIR")
def test_the_builtin_model_samples_reproducibly(tmp_path: Path) -> None:
    """SmolLM2 on two MedQA questions, three short answers each at temperature 1.5: every
    answer logged, and a second run draws the same ones."""
    entry = {
        "name": "smollm2",
        "model": "smollm2-135m-instruct",
        "backend": "hf",
        "multiple_choice": "generate",
        "sampling": {"repeats": 3, "temperature": 1.5, "seed": 0},
    }
    config = {
        "name": "sampled",
        "models": [entry],
        "tasks": [{"name": "medqa_4opt", "limit": 2}],
        "generation": {"choice_max_new_tokens": 4},
        "bootstrap_resamples": 100,
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    logs = []
    for out in ("first", "second"):
        assert main(["run", str(path), "--out", str(tmp_path / out)]) == 0
        logs.append(rows_of(tmp_path / out / "sampled", "smollm2", "medqa_4opt"))
    assert logs[0] == logs[1]
    answers = [[a.answer for a in row.repeats or []] for row in logs[0]]
    assert all(len(group) == 3 for group in answers)
    assert any(len(set(group)) > 1 for group in answers)  # sampled, not greedy
