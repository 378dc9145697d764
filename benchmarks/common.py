"""What the benchmark scripts share: timing a whole process, and the two commands compared."""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def timed(command: list[str]) -> float:
    """Wall seconds of one whole process (start-up and model load included)."""
    return timed_with_cpu(command)[0]


def timed_with_cpu(command: list[str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one whole process: the CPU time
    shows whether a long run was slowed by other work on the machine."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def limit_option(flag: str, limit: int | None) -> list[str]:
    """``flag N``, or nothing for every sample."""
    return [] if limit is None else [flag, str(limit)]


def medharness_eval(task: str, limit: int | None, out: Path, *options: str) -> list[str]:
    """`medharness eval` of the built-in model on the first ``limit`` samples of ``task``
    (all of them for None)."""
    return [
        str(BIN / "medharness"),
        "eval",
        "--model",
        "smollm2-135m-instruct",
        "--tasks",
        task,
        *limit_option("--limit", limit),
        "--out",
        str(out),
        *options,
    ]


def lm_eval_run(task: str, limit: int | None, weights: Path, out: Path, *options: str) -> list[str]:
    """`lm-eval run` (HF backend, CPU) on medharness's lm-eval task YAML (comma-separated
    tasks), samples logged."""
    return [
        str(BIN / "lm-eval"),
        "run",
        "--include_path",
        str(ROOT / "tasks"),
        "--tasks",
        task,
        *limit_option("--limit", limit),
        "--model",
        "hf",
        "--model_args",
        f"pretrained={weights}",
        "--device",
        "cpu",
        "--log_samples",
        "--output_path",
        str(out),
        *options,
    ]


def save_random_lora(model_dir: str | Path, seed: int = 0) -> str:
    """A rank-16 LoRA on every linear layer with small random B, so it changes the answers
    (another ``seed``, another adapter)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folder = Path(tempfile.mkdtemp(prefix="lora-bench-")) / "adapter"
    torch.manual_seed(seed)
    lora = get_peft_model(
        AutoModelForCausalLM.from_pretrained(model_dir),
        LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"),
    )
    with torch.no_grad():
        for name, parameter in lora.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.002)
    lora.save_pretrained(folder)
    return str(folder)


@contextlib.contextmanager
def served_by_vllm(model_dir: str | Path, name: str) -> Iterator[str]:
    """vLLM's OpenAI-compatible server for ``model_dir`` on a free loopback port (fp32 and
    eager with a 2 GiB KV cache on a CPU; vLLM's defaults on CUDA); its base URL. Its
    development routes are on (loopback only), so that a timing can start from an empty
    prefix cache (POST /reset_prefix_cache)."""
    import torch

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
        "--served-model-name", name, "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    if not torch.cuda.is_available():
        command += [
            "--dtype",
            "float32",
            "--enforce-eager",
            "--kv-cache-memory-bytes",
            "2147483648",
        ]
    server = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "VLLM_SERVER_DEV_MODE": "1"},
    )
    try:
        deadline = time.monotonic() + 600
        while True:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("vllm serve did not start")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                time.sleep(1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.terminate()
        server.wait(timeout=60)


def backend_workload(
    limit: int | None, medqa_limit: int | None
) -> tuple[list[str], list[Any], list[Any]]:
    """What the backend comparisons run: the first ``limit`` MedQuAD test questions, the
    first ``medqa_limit`` MedQA 4-option questions (all for None), and those questions'
    option requests."""
    from medharness.tasks import get_task

    data = Path(os.environ["MEDHARNESS_DATA_DIR"])
    questions = [s.prompt for s in get_task("medquad_gen").load(data / "medquad").samples[:limit]]
    medqa = get_task("medqa_4opt").load(data / "medqa").samples[:medqa_limit]
    requests = [(s.prompt, " " + choice) for s in medqa for choice in s.choices]
    return questions, medqa, requests
