"""The two backends side by side: transformers (``backend: hf``) vs vLLM (``backend: vllm``).

In one process, on the built-in SmolLM2-135M-Instruct (or --model), in turn for each
backend: load, greedy answers to the first N MedQuAD test questions, then the four options
of the first M MedQA 4-option test questions scored by log-likelihood. Prints load seconds,
generated tokens per second, MedQA questions per second, the ratios, how many answers are
identical and how many MedQA choices agree. With --lora, both serve a random rank-16 LoRA
adapter (transformers merges it in fp32; vLLM serves it unmerged). With --vllm-own-binding,
a third side runs vLLM on the cores its CPU build picks itself (all but one, left to its
scheduler) rather than the cores transformers uses. --repeats N runs every side N times,
rotating which goes first, and prints the median of each ratio; --medqa-only skips
generation.

Needs vLLM in the environment (`make setup-vllm` gives .venv-vllm with the CPU build):

    MEDHARNESS_DATA_DIR=... .venv-vllm/bin/python benchmarks/hf_vs_vllm.py --limit 64
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

from common import backend_workload, save_random_lora

THREADS_BIND = "VLLM_CPU_OMP_THREADS_BIND"
# each side: the backend it loads and the thread binding it sets (None: medharness's own)
SIDES = {"hf": ("hf", None), "vllm": ("vllm", None), "vllm-own-binding": ("vllm", "auto")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--limit", type=int, default=64, help="MedQuAD questions")
    parser.add_argument("--medqa-limit", type=int, default=100, help="MedQA questions")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--dtype", default="auto", help="auto: bf16 on CUDA, else fp32")
    parser.add_argument("--lora", action="store_true", help="serve a random LoRA adapter")
    parser.add_argument("--medqa-only", action="store_true", help="skip generation")
    parser.add_argument("--vllm-own-binding", action="store_true")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    from medharness.models.builtin import builtin_model_dir

    questions, medqa, requests = backend_workload(
        0 if args.medqa_only else args.limit, args.medqa_limit
    )
    model_dir = str(builtin_model_dir()) if args.model == "smollm2-135m-instruct" else args.model
    adapter = save_random_lora(model_dir) if args.lora else None
    sides = ["hf", "vllm"] + (["vllm-own-binding"] if args.vllm_own_binding else [])

    runs: list[dict[str, dict[str, Any]]] = []
    for repeat in range(args.repeats):
        order = sides[repeat % len(sides) :] + sides[: repeat % len(sides)]
        print(f"run {repeat + 1}: {', '.join(order)}")
        runs.append(
            {side: measure(side, model_dir, adapter, args, questions, requests) for side in order}
        )
        report(runs[-1], sides, len(questions), len(medqa))
    if args.repeats > 1:
        for side in sides[1:]:
            ratios = [run[side]["medqa_per_s"] / run["hf"]["medqa_per_s"] for run in runs]
            print(
                f"median MedQA questions/s {side} / hf over {len(runs)} runs: "
                f"{statistics.median(ratios):.2f} ({', '.join(f'{r:.2f}' for r in ratios)})"
            )


def measure(
    side: str,
    model_dir: str,
    adapter: str | None,
    args: Any,
    questions: list[str],
    requests: list[Any],
) -> dict[str, Any]:
    """Load one side's model, answer and score, close it; what it gave and how fast."""
    from medharness.models.loading import load_model

    backend, binding = SIDES[side]
    os.environ.pop(THREADS_BIND, None)
    if binding is not None:
        os.environ[THREADS_BIND] = binding
    start = time.perf_counter()
    model = load_model(model_dir, adapter=adapter, backend=backend, dtype=args.dtype)
    loaded = time.perf_counter()
    answers = model.generate(questions, args.max_new_tokens) if questions else []
    generated = time.perf_counter()
    scores = model.loglikelihoods(requests)
    scored = time.perf_counter()
    tokenizer = model.tokenizer  # type: ignore[attr-defined]
    tokens = sum(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers)
    tokens_per_s = tokens / max(generated - loaded, 1e-9)
    medqa = len(requests) // 4
    print(
        f"{side:17s} load {loaded - start:6.1f} s   generation {generated - loaded:6.1f} s"
        f" ({tokens_per_s:7.1f} tokens/s)   MedQA {scored - generated:6.1f} s"
        f" ({medqa / (scored - generated):6.2f} questions/s)"
    )
    close = getattr(model, "close", None)
    if close is not None:
        close()
    del model
    os.environ.pop(THREADS_BIND, None)
    return {
        "answers": answers,
        "scores": scores,
        "choices": [
            scores[i : i + 4].index(max(scores[i : i + 4])) for i in range(0, len(scores), 4)
        ],
        "tokens_per_s": tokens_per_s,
        "medqa_per_s": medqa / (scored - generated),
    }


def report(run: dict[str, dict[str, Any]], sides: list[str], questions: int, medqa: int) -> None:
    hf = run["hf"]
    for side in sides[1:]:
        other = run[side]
        same = sum(a == b for a, b in zip(hf["answers"], other["answers"], strict=True))
        agree = sum(a == b for a, b in zip(hf["choices"], other["choices"], strict=True))
        gap = max(abs(a - b) for a, b in zip(hf["scores"], other["scores"], strict=True))
        if questions:
            print(
                f"generation tokens/s {side} / hf: {other['tokens_per_s'] / hf['tokens_per_s']:.2f}"
            )
        print(f"MedQA questions/s {side} / hf: {other['medqa_per_s'] / hf['medqa_per_s']:.2f}")
        print(
            f"  identical answers: {same}/{questions}; same MedQA choice: {agree}/{medqa}; "
            f"largest log-likelihood difference {gap:.2e}"
        )


if __name__ == "__main__":
    main()
