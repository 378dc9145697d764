"""The two backends side by side: transformers (``backend: hf``) vs vLLM (``backend: vllm``).

In one process, on the built-in SmolLM2-135M-Instruct (or --model), in turn for each
backend: load, greedy answers to the first N MedQuAD test questions, then the four options
of the first M MedQA 4-option test questions scored by log-likelihood. Prints load seconds,
generated tokens per second, MedQA questions per second, the ratios, how many answers are
identical and how many MedQA choices agree. With --lora, both serve a random rank-16 LoRA
adapter (transformers merges it in fp32; vLLM serves it unmerged).

Needs vLLM in the environment (`make setup-vllm` gives .venv-vllm with the CPU build):

    MEDHARNESS_DATA_DIR=... .venv-vllm/bin/python benchmarks/hf_vs_vllm.py --limit 64
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from common import backend_workload, save_random_lora


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--limit", type=int, default=64, help="MedQuAD questions")
    parser.add_argument("--medqa-limit", type=int, default=100, help="MedQA questions")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--dtype", default="auto", help="auto: bf16 on CUDA, else fp32")
    parser.add_argument("--lora", action="store_true", help="serve a random LoRA adapter")
    args = parser.parse_args()

    from medharness.models.builtin import builtin_model_dir
    from medharness.models.loading import load_model

    questions, medqa, requests = backend_workload(args.limit, args.medqa_limit)
    model_dir = str(builtin_model_dir()) if args.model == "smollm2-135m-instruct" else args.model
    adapter = save_random_lora(model_dir) if args.lora else None

    results: dict[str, dict[str, Any]] = {}
    for backend in ("hf", "vllm"):
        start = time.perf_counter()
        model = load_model(model_dir, adapter=adapter, backend=backend, dtype=args.dtype)
        loaded = time.perf_counter()
        answers = model.generate(questions, args.max_new_tokens)
        generated = time.perf_counter()
        scores = model.loglikelihoods(requests)
        scored = time.perf_counter()
        tokenizer = model.tokenizer  # type: ignore[attr-defined]
        tokens = sum(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers)
        results[backend] = {
            "answers": answers,
            "choices": [
                scores[i : i + 4].index(max(scores[i : i + 4])) for i in range(0, len(scores), 4)
            ],
            "load_s": loaded - start,
            "tokens_per_s": tokens / (generated - loaded),
            "medqa_per_s": len(medqa) / (scored - generated),
        }
        print(
            f"{backend:5s} load {loaded - start:6.1f} s   generation {generated - loaded:6.1f} s"
            f" ({tokens / (generated - loaded):7.1f} tokens/s)   MedQA {scored - generated:6.1f} s"
            f" ({len(medqa) / (scored - generated):6.2f} questions/s)"
        )
        close = getattr(model, "close", None)
        if close is not None:
            close()
        del model

    hf, vllm = results["hf"], results["vllm"]
    same = sum(a == b for a, b in zip(hf["answers"], vllm["answers"], strict=True))
    agree = sum(a == b for a, b in zip(hf["choices"], vllm["choices"], strict=True))
    print(f"generation tokens/s vllm / hf: {vllm['tokens_per_s'] / hf['tokens_per_s']:.2f}")
    print(f"MedQA questions/s vllm / hf: {vllm['medqa_per_s'] / hf['medqa_per_s']:.2f}")
    print(f"identical answers: {same}/{len(questions)}; same MedQA choice: {agree}/{len(medqa)}")


if __name__ == "__main__":
    main()
