"""The built-in SmolLM2-135M on a few real samples: parity with lm-eval, reference scores.

Slow (the first run converts the GGUF, ~45 s; each test then takes seconds to a minute).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    MMLU_SUBJECTS,
    REAL_DATA,
    cais_mmlu_copy,
    lm_eval_mmlu_config,
    lm_eval_task_manager,
)

from medharness.cli import main

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(REAL_DATA is None, reason="needs MEDHARNESS_DATA_DIR"),
]
TASKS_DIR = Path(__file__).resolve().parent.parent / "tasks"
REFERENCE = json.loads((Path(__file__).parent / "reference_scores.json").read_text())


def lm_eval_samples(task: str, limit: int, **kwargs: Any) -> list[dict[str, Any]]:
    """Run lm-eval itself on the lm-eval view of our task, with the same weights."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from medharness.models.builtin import builtin_model_dir

    model = HFLM(pretrained=str(builtin_model_dir()), device="cpu", batch_size=4)
    output = simple_evaluate(
        model=model,
        tasks=[task],
        limit=limit,
        log_samples=True,
        task_manager=TaskManager(include_path=str(TASKS_DIR)),
        **kwargs,
    )
    assert output is not None
    samples: list[dict[str, Any]] = output["samples"][task]
    return sorted(samples, key=lambda sample: sample["doc_id"])


def our_run(out: Path, tasks: str, limit: int, *extra: str) -> Path:
    """``medharness eval`` of the built-in model on ``tasks``; its run directory."""
    code = main(
        [
            "eval",
            "--model",
            "smollm2-135m-instruct",
            "--tasks",
            tasks,
            "--limit",
            str(limit),
            "--out",
            str(out),
            "--batch-size",
            "4",
            "--name",
            "eval-smollm2-135m-instruct",
            *extra,
        ]
    )
    assert code == 0
    return out / "eval-smollm2-135m-instruct"


def sample_log(run: Path, task: str) -> list[dict[str, Any]]:
    lines = (run / "samples" / "smollm2-135m-instruct" / f"{task}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def our_samples(tmp_path: Path, task: str, limit: int, *extra: str) -> list[dict[str, Any]]:
    return sample_log(our_run(tmp_path, task, limit, *extra), task)


def test_medqa_loglikelihoods_and_choices_equal_lm_eval(tmp_path: Path) -> None:
    limit = REFERENCE["medqa_4opt"]["limit"]
    ours = our_samples(tmp_path, "medqa_4opt", limit)
    theirs = lm_eval_samples("medqa_4opt", limit)
    assert len(ours) == len(theirs) == limit
    for mine, reference in zip(ours, theirs, strict=True):
        expected = [float(resp[0][0]) for resp in reference["resps"]]
        assert mine["loglikelihoods"] == pytest.approx(expected, abs=1e-3)
        assert mine["metrics"]["acc"] == reference["acc"]


@pytest.mark.usefixtures("offline_datasets")
def test_mmlu_loglikelihoods_and_choices_equal_lm_evals_own_mmlu_tasks(tmp_path: Path) -> None:
    """lm-eval's own mmlu_<subject> configs (not a view of ours), fed the release rows in
    cais/mmlu's fields, against medharness on the release CSVs: every option's
    log-likelihood within 1e-4 and the same choice, on the first questions of each subject.
    Both sides in float32 (lm-eval's auto would take the checkpoint's dtype)."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    from medharness.models.builtin import builtin_model_dir

    assert REAL_DATA is not None
    limit = 4
    copy = cais_mmlu_copy(REAL_DATA / "mmlu_medical", tmp_path / "cais-mmlu")
    model = HFLM(pretrained=str(builtin_model_dir()), device="cpu", batch_size=4, dtype="float32")
    output = simple_evaluate(
        model=model,
        tasks=[lm_eval_mmlu_config(subject, copy) for subject in MMLU_SUBJECTS],
        limit=limit,
        log_samples=True,
        task_manager=lm_eval_task_manager(),
    )
    assert output is not None
    tasks = ",".join(f"mmlu_{subject}" for subject in MMLU_SUBJECTS)
    run = our_run(tmp_path / "ours", tasks, limit)
    for subject in MMLU_SUBJECTS:
        task = f"mmlu_{subject}"
        theirs = sorted(output["samples"][task], key=lambda sample: sample["doc_id"])
        ours = sample_log(run, task)
        assert len(ours) == len(theirs) == limit
        for mine, reference in zip(ours, theirs, strict=True):
            assert mine["doc_id"] == str(reference["doc_id"])
            expected = [float(resp[0][0]) for resp in reference["resps"]]
            assert mine["loglikelihoods"] == pytest.approx(expected, abs=1e-4)
            assert mine["chosen"] == max(range(4), key=expected.__getitem__)
            assert mine["metrics"]["acc"] == reference["acc"]


def test_medqa_matches_committed_reference_scores(tmp_path: Path) -> None:
    reference = REFERENCE["medqa_4opt"]
    ours = our_samples(tmp_path, "medqa_4opt", reference["limit"])
    accuracy = sum(row["metrics"]["acc"] for row in ours) / len(ours)
    assert accuracy == pytest.approx(reference["acc"], abs=1e-9)
    assert ours[0]["loglikelihoods"] == pytest.approx(reference["first_loglikelihoods"], abs=1e-3)


def test_medquad_generation_equals_lm_eval_with_chat_template(tmp_path: Path) -> None:
    reference = REFERENCE["medquad_gen"]
    tokens = str(reference["max_new_tokens"])
    ours = our_samples(tmp_path, "medquad_gen", reference["limit"], "--max-new-tokens", tokens)
    theirs = lm_eval_samples(
        "medquad_gen",
        reference["limit"],
        apply_chat_template=True,
        gen_kwargs=f"max_gen_toks={tokens}",
    )
    by_doc = {row["doc_id"]: row["prediction"] for row in ours}
    for sample in theirs:
        assert by_doc[sample["doc"]["doc_id"]] == sample["resps"][0][0].strip()
    rouge1 = sum(row["metrics"]["rouge1"] for row in ours) / len(ours)
    assert rouge1 == pytest.approx(reference["rouge1"], abs=0.02)


@pytest.mark.heavy  # batch-size invariance; the lm-eval equality tests pin the numbers
def test_medqa_choices_do_not_depend_on_batch_size() -> None:
    from medharness.models.loading import load_model
    from medharness.tasks import get_task

    assert REAL_DATA is not None
    samples = get_task("medqa_4opt").load(REAL_DATA / "medqa").samples[:16]
    requests = [(s.prompt, " " + choice) for s in samples for choice in s.choices]
    one = load_model("smollm2-135m-instruct", batch_size=1).loglikelihoods(requests)
    sixteen = load_model("smollm2-135m-instruct", batch_size=16).loglikelihoods(requests)
    assert one == pytest.approx(sixteen, abs=1e-4)
    choices = [max(range(4), key=lambda k, i=i: one[i + k]) for i in range(0, len(one), 4)]
    assert choices == [
        max(range(4), key=lambda k, i=i: sixteen[i + k]) for i in range(0, len(one), 4)
    ]


@pytest.mark.heavy  # batch-size invariance; the lm-eval equality tests pin the numbers
def test_greedy_generation_does_not_depend_on_batch_size() -> None:
    from medharness.models.loading import load_model
    from medharness.tasks import get_task

    assert REAL_DATA is not None
    questions = [s.prompt for s in get_task("medquad_gen").load(REAL_DATA / "medquad").samples[:4]]
    one = load_model("smollm2-135m-instruct", batch_size=1).generate(questions, 32)
    four = load_model("smollm2-135m-instruct", batch_size=4).generate(questions, 32)
    assert one == four


def test_options_parsed_from_the_real_model_answers(tmp_path: Path) -> None:
    """Generate-then-parse on the built-in model: each logged option is what the parsing
    rules read from the logged answer, and the invalid-answer rate has the exact interval
    statsmodels computes."""
    from statsmodels.stats.proportion import proportion_confint

    from medharness.tasks.answers import extract_choice

    rows = our_samples(tmp_path, "medqa_4opt", 12, "--multiple-choice", "generate")
    for row in rows:
        read = extract_choice(row["answer"], row["choices"], hit_limit=row["hit_token_limit"])
        chosen = read.choice
        assert row["chosen"] == (-1 if chosen is None else chosen)
        assert row["metrics"]["invalid_answer"] == float(read.invalid)
        assert row["metrics"]["truncated"] == float(read.truncated)
        assert row["metrics"]["acc"] == float(chosen == row["gold"])
        assert row["loglikelihoods"] == []
    results = json.loads((tmp_path / "eval-smollm2-135m-instruct" / "results.json").read_text())
    metrics = results["results"]["smollm2-135m-instruct"]["medqa_4opt"]["metrics"]
    invalid = sum(row["extracted_by"] == "none" for row in rows)
    assert metrics["invalid_answer"]["value"] == invalid / len(rows)
    low, high = proportion_confint(invalid, len(rows), method="beta")
    assert metrics["invalid_answer"]["ci95"] == pytest.approx([low, high], abs=1e-9)
    assert metrics["acc"]["value"] == sum(row["chosen"] == row["gold"] for row in rows) / 12


COT_BUDGET = 128  # ~30 s for 20 questions at batch 8 on two CPU cores


@pytest.mark.heavy  # the fake-model CoT tests cover the same paths in seconds
def test_chain_of_thought_on_20_medqa_questions(tmp_path: Path) -> None:
    """CoT end to end on the built-in model: every logged option is what the extraction rules
    read from the logged answer (final line first; an answer cut off at the budget before
    one is truncated, never parsed), and the accuracy, invalid and truncated rates have the
    exact intervals statsmodels computes."""
    from statsmodels.stats.proportion import proportion_confint

    from medharness.tasks.answers import extract_choice

    argv = ["eval", "--model", "smollm2-135m-instruct", "--tasks", "medqa_4opt", "--limit", "20"]
    argv += ["--multiple-choice", "cot", "--cot-max-new-tokens", str(COT_BUDGET)]
    argv += ["--name", "eval-smollm2-135m-instruct"]
    assert main([*argv, "--batch-size", "8", "--out", str(tmp_path)]) == 0
    run = tmp_path / "eval-smollm2-135m-instruct"
    log = run / "samples" / "smollm2-135m-instruct" / "medqa_4opt.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(rows) == 20
    for row in rows:
        assert 0 < row["answer_tokens"] <= COT_BUDGET
        assert row["hit_token_limit"] == (row["answer_tokens"] == COT_BUDGET)
        read = extract_choice(
            row["answer"],
            row["choices"],
            hit_limit=row["hit_token_limit"],
            final_line_required=True,
        )
        assert row["extracted_by"] == read.rule
        assert row["chosen"] == (-1 if read.choice is None else read.choice)
        if read.truncated:
            assert row["chosen"] == -1 and row["prediction"] == ""
    metrics = json.loads((run / "results.json").read_text())["results"]["smollm2-135m-instruct"]
    for name, count in (
        ("acc", sum(row["chosen"] == row["gold"] for row in rows)),
        ("invalid_answer", sum(row["extracted_by"] == "none" for row in rows)),
        ("truncated", sum(row["extracted_by"] == "truncated" for row in rows)),
    ):
        value = metrics["medqa_4opt"]["metrics"][name]
        assert value["value"] == count / 20
        low, high = proportion_confint(count, 20, method="beta")
        assert value["ci95"] == pytest.approx([low, high], abs=1e-9)
