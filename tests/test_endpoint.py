"""The endpoint backend against a stub OpenAI-compatible server on 127.0.0.1: what it sends,
how it reads echoed log-probs, every fault ending in a retry that succeeds or one error line,
resuming without re-sending, the request budget, the key kept out of every file, and
generate-then-parse multiple choice. The same backend against a real ``vllm serve`` of the
built-in model is in tests/test_vllm_backend.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import write_fixture_data
from openai_stub import REASONED, Fault, Stub, StubState, refusal, serve
from statsmodels.stats.proportion import proportion_confint

from medharness.cli import main
from medharness.core.io import read_jsonl
from medharness.core.records import SAMPLE_ROWS
from medharness.models.endpoint import TOP_LOGPROBS
from medharness.tasks.answers import extract_choice

SECRET = "sk-test-9f8e7d6c5b4a"
QUICK = {"backoff_s": 0.01, "timeout_s": 10, "retries": 2}
# the stub's hangs last longer; one request at a time, so no other request waits on them
HANG = {"timeout_s": 1.0, "concurrency": 1}


@pytest.fixture
def stub() -> Iterator[Stub]:
    yield from serve(StubState())


@pytest.fixture(scope="session")
def scaled_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """32 MedQA test questions: two chunks at concurrency 1."""
    return write_fixture_data(tmp_path_factory.mktemp("scaled"), scale=4)


def write_config(
    tmp_path: Path, stub: Stub, data: Path, tasks: tuple[str, ...] = ("medqa_4opt",), **entry: Any
) -> Path:
    """A run of one served model; ``entry`` changes its model entry (None removes a key)."""
    model = {"name": "served", "model": "openai:stub", "base_url": stub.url}
    model["requests"] = {**QUICK, **entry.pop("requests", {})}
    model.update(entry)
    config = {
        "name": "endpoint",
        "data_dir": str(data),
        "models": [{key: value for key, value in model.items() if value is not None}],
        "tasks": list(tasks),
        "output_dir": str(tmp_path / "runs"),
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def rows(run: Path, task: str = "medqa_4opt") -> list[Any]:
    return SAMPLE_ROWS.validate_python(
        list(read_jsonl(run / "samples" / "served" / f"{task}.jsonl"))
    )


def test_requests_and_scores_follow_the_openai_protocol(
    tmp_path: Path, stub: Stub, fixture_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STUB_KEY", SECRET)
    tasks = ("medqa_4opt", "medquad_gen")
    config = write_config(tmp_path, stub, fixture_data, tasks, api_key_env="STUB_KEY")
    assert main(["run", str(config)]) == 0
    run = tmp_path / "runs" / "endpoint"

    choices = rows(run)
    assert {row.chosen for row in choices} == {1}  # the stub's log-probs favour " B"
    # the continuation " B" is one token of log-prob -0.5; " A" one of -2.6
    assert {tuple(row.loglikelihoods) for row in choices} == {(-2.6, -0.5, -2.6, -2.6)}
    completions = [r["body"] for r in stub.state.completions() if r["path"] == "/v1/completions"]
    # each question's context alone, its options read off the next token's top log-probs
    tops = [b for b in completions if "logit_bias" not in b]
    assert len(tops) == len(choices) and not any("echo" in b for b in completions)
    assert all(b["logprobs"] == TOP_LOGPROBS and b["max_tokens"] == 1 for b in tops)
    assert all(b["prompt"].endswith("Answer:") for b in tops)
    # but " D" is not among the top ones after the question on symptom 1: each of its
    # options is forced after the question alone, by the token id the server's /tokenize
    # (at its root, not under /v1) gives for it after the question
    forced = [b for b in completions if "logit_bias" in b]
    [question] = {b["prompt"] for b in forced}
    assert stub.state.rare_option_in in question and question.endswith("Answer:")
    assert all(b["max_tokens"] == 1 and b["temperature"] == 0.0 for b in forced)
    biases = sorted(tuple(b["logit_bias"].items()) for b in forced)
    assert biases == sorted(((str(stub.state.vocabulary[f" {x}"]), 100),) for x in "ABCD")
    tokenized = [r["body"]["prompt"] for r in stub.state.requests if r["path"] == "/tokenize"]
    assert sorted(tokenized) == sorted([question] + [f"{question} {x}" for x in "ABCD"])

    chats = [r["body"] for r in stub.state.completions() if r["path"] == "/v1/chat/completions"]
    answers = [row.prediction for row in rows(run, "medquad_gen")]
    assert len(chats) == len(answers) and all(a.startswith("Stub answer about") for a in answers)
    assert all(c["temperature"] == 0.0 and c["max_tokens"] == 128 for c in chats)
    assert all(len(c["messages"]) == 1 and c["messages"][0]["role"] == "user" for c in chats)

    assert {r["headers"].get("Authorization") for r in stub.state.requests} == {f"Bearer {SECRET}"}
    for path in run.rglob("*"):
        assert not path.is_file() or SECRET.encode() not in path.read_bytes(), path
    recorded = json.loads((run / "manifest.json").read_text())["models"]["served"]
    assert recorded["kind"] == "openai" and recorded["server"]["root"] == "stub-weights-v1"
    assert "server's own" in recorded["chat_template"]


def test_a_rate_limit_waits_as_long_as_retry_after_says(
    tmp_path: Path, stub: Stub, fixture_data: Path
) -> None:
    stub.state.faults = [Fault("429", 2)]
    stub.state.retry_after = "0.3"
    config = write_config(tmp_path, stub, fixture_data, requests={"concurrency": 1})
    assert main(["run", str(config)]) == 0
    times = [r["at"] for r in stub.state.completions()]
    assert times[1] - times[0] >= 0.3 and times[2] - times[1] >= 0.3  # not backoff_s (0.01)
    assert len(rows(tmp_path / "runs" / "endpoint")) == 8


@pytest.mark.parametrize("fault", ["500", "hang", "malformed"])
def test_a_passing_fault_is_retried_and_changes_nothing(
    fault: str, tmp_path: Path, stub: Stub, fixture_data: Path
) -> None:
    stub.state.faults = [Fault(fault, 2, skip=5)]
    stub.state.hang_s = 3.0  # past the 1 s timeout
    config = write_config(tmp_path, stub, fixture_data, requests=HANG if fault == "hang" else {})
    assert main(["run", str(config)]) == 0
    # one request per question, one per option of symptom 1's question, two sent again
    assert len(stub.state.completions()) == 8 + 4 + 2
    assert {row.chosen for row in rows(tmp_path / "runs" / "endpoint")} == {1}


FAULT_LINES = {
    "500": "HTTP 500 after 2 retries",
    "hang": "no answer within 1 s after 2 retries",
    "malformed": "the answer was not JSON after 2 retries",
    "429": "HTTP 429 after 2 retries",
}


@pytest.mark.parametrize("fault", sorted(FAULT_LINES))
def test_a_lasting_fault_is_one_line_and_keeps_finished_samples(
    fault: str,
    tmp_path: Path,
    stub: Stub,
    fixture_data: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    stub.state.faults = [Fault(fault, 10_000)]
    stub.state.hang_s = 3.0
    config = write_config(tmp_path, stub, fixture_data, requests=HANG if fault == "hang" else {})
    assert main(["run", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert FAULT_LINES[fault] in err[-1] and "run the same command again" in err[-1], err
    assert err[-1].startswith("medharness: error:")
    assert not (tmp_path / "runs" / "endpoint").exists()


def resume_config(tmp_path: Path, stub: Stub, data: Path, **requests: Any) -> Path:
    """32 MedQA questions, one request in flight, every option among the top next tokens:
    two chunks of 16 questions (16 requests each)."""
    stub.state.rare_option_in = "no such question"
    return write_config(tmp_path, stub, data, requests={"concurrency": 1, **requests})


def test_a_run_stopped_by_a_fault_resumes_without_sending_finished_requests(
    tmp_path: Path, stub: Stub, scaled_data: Path
) -> None:
    config = resume_config(tmp_path, stub, scaled_data)
    stub.state.faults = [Fault("500", 10_000, skip=20)]  # in the second chunk
    assert main(["run", str(config)]) == 2
    # the failing request and its retries, and nothing after it
    assert len(stub.state.completions()) == 20 + 1 + QUICK["retries"]
    first = [r["body"]["prompt"] for r in stub.state.completions()[:16]]
    stub.state.faults, stub.state.requests = [], []
    assert main(["run", str(config)]) == 0
    again = [r["body"]["prompt"] for r in stub.state.completions()]
    assert len(again) == 16 and not set(again) & set(first)
    assert len(rows(tmp_path / "runs" / "endpoint")) == 32


def test_the_request_budget_stops_before_a_batch_it_cannot_finish(
    tmp_path: Path, stub: Stub, scaled_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = resume_config(tmp_path, stub, scaled_data, max_requests=20)
    assert main(["run", str(config)]) == 2
    assert "max_requests 20 reached (16 sent, 16 more needed" in capsys.readouterr().err
    assert len(stub.state.completions()) == 16
    assert main(["run", str(config)]) == 0  # a new run, a new budget: the rest
    assert len(stub.state.completions()) == 32


FORMS = {  # what a server does not take or does otherwise, as the stub's settings
    "every form": {},
    "no top log-probs": {"max_logprobs": 5},
    "no logit_bias": {"logit_bias": False},
    "no /tokenize": {"tokenize": False},
    "no /tokenize, no lists": {"tokenize": False, "prompt_lists": False},
    "log-probs after the bias": {"processed_logprobs": True},
}
PER_OPTION = {"max_logprobs": 5, "tokenize": False, "prompt_lists": False}


@pytest.mark.parametrize("form", sorted(FORMS))
def test_a_question_in_one_request_scores_as_one_request_per_option(
    form: str, tmp_path: Path, stub: Stub, scaled_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Whatever cheaper form the server takes (top log-probs, forced options, lists),
    every option's log-likelihood and every choice equal those of one echoed request per
    option (the form lm-eval sends, and what is left where the server takes none); a refused
    form is said once and not asked again (one request in flight: no other request of its
    batch is sent after the refusal); so is a server without /tokenize, and one whose forced
    log-probs are after the bias, whose questions go on as lists."""

    def run(name: str, **refusals: Any) -> tuple[list[Any], list[Any], str]:
        """The rows, the requests the stub took and what the run told."""
        stub.state.requests = []
        defaults = StubState()
        for setting in ("max_logprobs", "prompt_lists", "logit_bias", "tokenize"):
            setattr(stub.state, setting, refusals.get(setting, getattr(defaults, setting)))
        stub.state.processed_logprobs = refusals.get("processed_logprobs", False)
        (tmp_path / name).mkdir()
        config = write_config(tmp_path / name, stub, scaled_data, requests={"concurrency": 1})
        assert main(["run", str(config)]) == 0
        sent = [r["body"] for r in stub.state.completions()]
        taken = [body for body in sent if refusal(stub.state, body) is None]
        told = capsys.readouterr().err
        assert len(sent) - len(taken) == told.count("does not take")
        return rows(tmp_path / name / "runs" / "endpoint"), taken, told

    each, taken, told = run("each", **PER_OPTION)
    assert "does not take top log-probs (logprobs must be at most 5)" in told
    assert "gives no token ids at http://127.0.0.1" in told and "/tokenize (HTTP 404)" in told
    assert "does not take lists of prompts (prompt must be a string)" in told
    assert len(taken) == 4 * 32 and all(body.get("echo") for body in taken)
    rows_of_ours, taken, told = run("ours", **FORMS[form])
    ours = {row.doc_id: row for row in rows_of_ours}
    assert sorted(ours) == sorted(row.doc_id for row in each)
    for theirs in each:
        assert ours[theirs.doc_id].chosen == theirs.chosen
        assert ours[theirs.doc_id].loglikelihoods == pytest.approx(theirs.loglikelihoods, abs=1e-4)
    questions = read_jsonl(scaled_data / "medqa" / "us_4opt_test.jsonl")
    rare_in = [stub.state.rare_option_in in row["question"] for row in questions]
    rare = sum(rare_in)
    # the first chunk (16 questions at one request in flight) with a question on symptom 1:
    # its options forced, before log-probs after the bias are seen and the form turned off
    found = next(sum(rare_in[at : at + 16]) for at in range(0, 32, 16) if any(rare_in[at:]))
    expected = {  # one request per question, and what the questions on symptom 1 add
        "every form": (32 + 4 * rare, 0),
        "no top log-probs": (4 * 32, 1),
        "no logit_bias": (32 + rare, 1),
        "no /tokenize": (32 + rare, 0),
        "no /tokenize, no lists": (32 + 4 * rare, 1),
        "log-probs after the bias": (32 + 4 * found + rare, 0),
    }
    assert rare == 4 and (len(taken), told.count("does not take")) == expected[form]
    after_bias = told.count("returns log-probs after logit_bias")
    assert after_bias == (form == "log-probs after the bias")


def test_options_never_among_the_top_log_probs_stop_that_form_after_one_chunk(
    tmp_path: Path, stub: Stub, scaled_data: Path
) -> None:
    """A model whose options are never among its top next tokens (" D" is rare after every
    question): the first chunk's options are forced one by one, and the next chunk asks no
    top log-probs at all."""
    stub.state.rare_option_in = "Answer:"
    config = write_config(tmp_path, stub, scaled_data, requests={"concurrency": 1})
    assert main(["run", str(config)]) == 0
    sent = [r["body"] for r in stub.state.completions()]
    tops = [index for index, body in enumerate(sent) if "logit_bias" not in body]
    assert tops == list(range(16)) and len(sent) == 16 + 4 * 32  # chunks of 16 questions
    assert len(rows(tmp_path / "runs" / "endpoint")) == 32


def test_answers_are_reused_only_while_the_server_serves_the_same_model(
    tmp_path: Path, stub: Stub, fixture_data: Path
) -> None:
    config = write_config(tmp_path, stub, fixture_data)
    assert main(["run", str(config)]) == 0
    sent = len(stub.state.completions())
    assert main(["run", str(config)]) == 0
    assert len(stub.state.completions()) == sent  # every sample log reused
    stub.state.root = "stub-weights-v2"  # another model behind the same name
    assert main(["run", str(config)]) == 0
    assert len(stub.state.completions()) == 2 * sent


def test_chain_of_thought_reads_final_lines_server_reasoning_and_cut_off_answers(
    tmp_path: Path, stub: Stub, fixture_data: Path
) -> None:
    """multiple_choice: cot against a server: lm-eval's CoT prompt with the CoT budget, the
    trace a reasoning server returns in reasoning_content kept with its token count, and an
    answer the server stopped at max_tokens (finish_reason length) counted truncated."""
    stub.state.logprobs = False
    config = write_config(tmp_path, stub, fixture_data, multiple_choice="cot")
    assert main(["run", str(config)]) == 0
    chats = [r["body"] for r in stub.state.completions()]
    assert all(c["max_tokens"] == 2048 for c in chats)
    assert all(c["messages"][0]["content"].endswith("(where X is A, B, C, or D).") for c in chats)
    logged = {row.doc_id: row for row in rows(tmp_path / "runs" / "endpoint")}
    for row in logged.values():
        if row.answer.startswith("<think>"):
            assert (row.extracted_by, row.hit_token_limit, row.chosen) == ("truncated", True, -1)
            assert row.reasoning == "Weighing A against B, the"
            assert row.metrics["truncated"] == 1.0
        elif row.reasoning == REASONED:
            assert (row.prediction, row.extracted_by, row.reasoning_tokens) == (
                "C",
                "final_answer",
                9,
            )
        else:
            assert (row.prediction, row.extracted_by, row.reasoning) == ("B", "final_answer", None)
    reasoned = sum(row.reasoning == REASONED for row in logged.values())
    outcomes = [row.extracted_by for row in logged.values()]
    assert outcomes.count("truncated") == 1 and reasoned == 1 and len(outcomes) == 8
    result = json.loads((tmp_path / "runs" / "endpoint" / "results.json").read_text())
    rate = result["results"]["served"]["medqa_4opt"]["metrics"]["truncated"]
    low, high = proportion_confint(1, 8, method="beta")
    assert rate["value"] == 1 / 8 and rate["ci95"] == pytest.approx([low, high], abs=1e-9)


def test_options_parsed_from_answers_count_invalid_ones_with_an_interval(
    tmp_path: Path, stub: Stub, fixture_data: Path
) -> None:
    stub.state.logprobs = False  # a chat API: generate-then-parse needs no log-probs
    config = write_config(tmp_path, stub, fixture_data, multiple_choice="generate")
    assert main(["run", str(config)]) == 0
    run = tmp_path / "runs" / "endpoint"
    parsed = rows(run)
    chats = [r["body"] for r in stub.state.completions()]
    assert all(
        c["max_tokens"] == 32 and "Answer with A, B, C or D only." in c["messages"][0]["content"]
        for c in chats
    )
    for row in parsed:  # the parsed option, recomputed from the logged answer
        chosen = extract_choice(row.answer, row.choices).choice
        assert row.chosen == (-1 if chosen is None else chosen)
        assert row.prediction == ("" if chosen is None else row.choices[chosen])
        assert row.metrics["invalid_answer"] == float(chosen is None)
        assert row.metrics["truncated"] == 0.0 and row.hit_token_limit is False
    invalid = sum(row.chosen == -1 for row in parsed)
    assert invalid == 1  # the stub cannot tell for "symptom 1"
    result = json.loads((run / "results.json").read_text())["results"]["served"]["medqa_4opt"]
    rate = result["metrics"]["invalid_answer"]
    assert rate["value"] == invalid / len(parsed)
    low, high = proportion_confint(invalid, len(parsed), method="beta")
    assert rate["ci95"] == pytest.approx([low, high], abs=1e-9)
    correct = sum(row.chosen == row.gold for row in parsed)
    assert result["metrics"]["acc"]["value"] == correct / len(parsed)
    assert "invalid" in (run / "report.html").read_text().lower()


ENDPOINT_CASES = {  # id (as in docs/errors.md) -> (model entry changes, what the one line says)
    "endpoint-no-base-url": ({"base_url": None}, "openai:stub needs base_url"),
    "endpoint-credentials-in-url": (
        {"base_url": "http://user:pw@127.0.0.1:9/v1"}, "base_url must not hold credentials",
    ),
    "endpoint-settings-on-local-model": (
        {"model": "smollm2-135m-instruct"},
        "base_url, api_key_env and requests belong to openai:NAME models",
    ),
    "endpoint-unreachable": (
        {"base_url": "http://127.0.0.1:9/v1"}, "connection failed",
    ),
    "endpoint-unknown-model": (
        {"model": "openai:other"}, "does not serve 'other'; it serves: stub",
    ),
    "endpoint-key-unset": (
        {"api_key_env": "NO_SUCH_KEY_VARIABLE"}, "$NO_SUCH_KEY_VARIABLE (api_key_env) is not set",
    ),
    "endpoint-no-logprobs": (
        {"logprobs": False}, "does not return prompt log-probs (its answers carry none)",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(ENDPOINT_CASES))
def test_a_bad_endpoint_is_one_line(
    case: str,
    tmp_path: Path,
    stub: Stub,
    fixture_data: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    changes, message = ENDPOINT_CASES[case]
    changes = dict(changes)
    stub.state.logprobs = changes.pop("logprobs", True)
    config = write_config(tmp_path, stub, fixture_data, requests={"retries": 0}, **changes)
    assert main(["run", str(config)]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "medharness: error:" in line]
    assert len(errors) == 1 and message in errors[0], err
    if case == "endpoint-no-logprobs":  # found at the first request: progress bars before it
        assert "set `multiple_choice: generate`" in errors[0]
    else:  # found before any work
        assert err.count("\n") == 1, err
