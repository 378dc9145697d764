"""The endpoint backend against in-process transformers: the same model served by `vllm serve`
on 127.0.0.1, asked through its OpenAI-compatible API at several concurrencies.

Starts vLLM's OpenAI server on the built-in SmolLM2-135M-Instruct (fp32 on a CPU, as vLLM
chooses on CUDA), then in turn: transformers in this process (batch 8), and the endpoint
backend at each --concurrency, each answering the first N MedQuAD test questions greedily
(--max-new-tokens) and scoring the four options of the first M MedQA questions. Prints
requests/s, generated tokens/s, MedQA questions/s, and how many answers and choices equal
transformers'. The server's startup is not counted; one warm-up request precedes the timing.

Needs vLLM in the environment (`make setup-vllm` gives .venv-vllm with the CPU build; on a
CUDA machine `pip install vllm` and the same command):

    MEDHARNESS_DATA_DIR=... .venv-vllm/bin/python benchmarks/endpoint_throughput.py \\
        --limit 64 --medqa-limit 50 --concurrency 1 8 32
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

from common import backend_workload, served_by_vllm

from medharness.models.base import LanguageModel


@dataclass
class Measured:
    answers: list[str]
    choices: list[int]
    tokens_per_s: float


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=64, help="MedQuAD questions")
    parser.add_argument("--medqa-limit", type=int, default=50, help="MedQA questions")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    args = parser.parse_args()

    from transformers import AutoTokenizer

    from medharness.models.builtin import builtin_model_dir
    from medharness.models.endpoint import load_endpoint_model
    from medharness.models.loading import load_model
    from medharness.models.specs import EndpointRequests

    questions, medqa, requests = backend_workload(args.limit, args.medqa_limit)
    tokenizer = AutoTokenizer.from_pretrained(builtin_model_dir())

    def measure(label: str, model: LanguageModel) -> Measured:
        start = time.perf_counter()
        answers = model.generate(questions, args.max_new_tokens)
        generated = time.perf_counter()
        scores = model.loglikelihoods(requests)
        scored = time.perf_counter()
        tokens = sum(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers)
        seconds = generated - start
        print(
            f"{label:16s} generation {seconds:6.1f} s: {len(questions) / seconds:6.2f} requests/s, "
            f"{tokens / seconds:7.1f} tokens/s   MedQA {scored - generated:6.1f} s: "
            f"{len(medqa) / (scored - generated):5.2f} questions/s"
        )
        choices = [
            scores[i : i + 4].index(max(scores[i : i + 4])) for i in range(0, len(scores), 4)
        ]
        return Measured(answers, choices, tokens / seconds)

    reference = load_model("smollm2-135m-instruct", backend="hf", dtype="float32")
    hf = measure("transformers b8", reference)
    del reference

    with served_by_vllm(builtin_model_dir(), "smollm2") as base_url:
        for concurrency in args.concurrency:
            served = load_endpoint_model(
                "smollm2",
                base_url=base_url,
                api_key_env=None,
                settings=EndpointRequests(concurrency=concurrency),
                system_prompt=None,
            )
            served.generate(["Warm up."], 4)
            result = measure(f"endpoint c={concurrency}", served)
            served.close()
            same = sum(a == b for a, b in zip(hf.answers, result.answers, strict=True))
            agree = sum(a == b for a, b in zip(hf.choices, result.choices, strict=True))
            print(
                f"  tokens/s vs transformers {result.tokens_per_s / hf.tokens_per_s:.2f}; "
                "identical answers "
                f"{same}/{len(questions)}; same MedQA choice {agree}/{len(medqa)}"
            )


if __name__ == "__main__":
    main()
