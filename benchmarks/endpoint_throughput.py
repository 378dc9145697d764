"""The endpoint backend against in-process transformers: the same model served by `vllm serve`
on 127.0.0.1, asked through its OpenAI-compatible API at several concurrencies.

Starts vLLM's OpenAI server on the built-in SmolLM2-135M-Instruct (fp32 on a CPU, as vLLM
chooses on CUDA), then in turn: transformers in this process (batch 8), and the endpoint
backend at each --concurrency, each answering the first N MedQuAD test questions greedily
(--max-new-tokens) and scoring the four options of the first M MedQA questions. Prints
requests/s, generated tokens/s, MedQA questions/s, and how many answers and choices equal
transformers'. The server's startup is not counted; one warm-up request precedes the timing.
Then, at each concurrency, MedQA side by side --repeats times, rotating which goes first:
transformers in this process, the endpoint one echoed request per option (lm-eval's
``local-completions``, the backend's last fallback), the letters read off the next token's
top log-probs else each question's options as one list of echoed prompts (``lists``), and
the backend's default, the letters read off the top log-probs else each forced by
``logit_bias`` after the question alone (``forced``); each timed run starts from an empty
prefix cache (the server's, emptied between runs), with the median of each's questions/s
over transformers' and over one request per option's. --medqa-only skips generation.

Needs vLLM in the environment (`make setup-vllm` gives .venv-vllm with the CPU build; on a
CUDA machine `pip install vllm` and the same command):

    MEDHARNESS_DATA_DIR=... .venv-vllm/bin/python benchmarks/endpoint_throughput.py \\
        --limit 64 --medqa-limit 50 --concurrency 1 8 32
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import statistics
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
    parser.add_argument("--medqa-only", action="store_true", help="skip generation")
    parser.add_argument("--repeats", type=int, default=1, help="MedQA side-by-side runs")
    args = parser.parse_args()

    from transformers import AutoTokenizer

    from medharness.models.backends.endpoint import EndpointRequests
    from medharness.models.builtin import builtin_model_dir
    from medharness.models.endpoint import load_endpoint_model
    from medharness.models.loading import load_model

    questions, medqa, requests = backend_workload(
        0 if args.medqa_only else args.limit, args.medqa_limit
    )
    tokenizer = AutoTokenizer.from_pretrained(builtin_model_dir())

    def measure(label: str, model: LanguageModel) -> Measured:
        start = time.perf_counter()
        answers = model.generate(questions, args.max_new_tokens) if questions else []
        generated = time.perf_counter()
        scores = model.loglikelihoods(requests)
        scored = time.perf_counter()
        tokens = sum(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers)
        seconds = max(generated - start, 1e-9)
        print(
            f"{label:16s} generation {seconds:6.1f} s: {len(questions) / seconds:6.2f} requests/s, "
            f"{tokens / seconds:7.1f} tokens/s   MedQA {scored - generated:6.1f} s: "
            f"{len(medqa) / (scored - generated):5.2f} questions/s"
        )
        return Measured(answers, choices_of(scores), tokens / seconds)

    reference = load_model("smollm2-135m-instruct", backend="hf", dtype="float32")
    hf = measure("transformers b8", reference)

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
            same = sum(a == b for a, b in zip(hf.answers, result.answers, strict=True))
            agree = sum(a == b for a, b in zip(hf.choices, result.choices, strict=True))
            if questions:
                print(
                    f"  tokens/s vs transformers {result.tokens_per_s / hf.tokens_per_s:.2f}; "
                    f"identical answers {same}/{len(questions)}; "
                    f"same MedQA choice {agree}/{len(medqa)}"
                )
            per_option = dataclasses.replace(
                served, next_token_options=False, forced_options=False, prompt_lists=False
            )
            sides: dict[str, Any] = {
                "transformers": reference,
                "per option": per_option,
                "lists": dataclasses.replace(served, forced_options=False),
                "forced": served,
            }
            empty_cache = functools.partial(reset_prefix_cache, base_url)
            side_by_side(sides, requests, len(medqa), args.repeats, empty_cache)
            served.close()


def choices_of(scores: list[float]) -> list[int]:
    return [scores[i : i + 4].index(max(scores[i : i + 4])) for i in range(0, len(scores), 4)]


def reset_prefix_cache(base_url: str) -> None:
    """Empty the server's prefix cache, so that no timed run reads what another computed."""
    root = base_url.removesuffix("/v1")
    request = urllib.request.Request(f"{root}/reset_prefix_cache", data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=60):
        pass


def side_by_side(
    sides: dict[str, Any],
    requests: list[Any],
    questions: int,
    repeats: int,
    before_each: Callable[[], None],
) -> None:
    """MedQA scored by each side ``repeats`` times, rotating which goes first, after
    ``before_each``; each run's questions/s, and the medians over transformers' (the first
    side) and over one request per option's."""
    names = list(sides)
    rates: dict[str, list[float]] = {name: [] for name in names}
    scores: dict[str, list[float]] = {}
    for repeat in range(repeats):
        order = names[repeat % len(names) :] + names[: repeat % len(names)]
        for name in order:
            before_each()
            start = time.perf_counter()
            scores[name] = sides[name].loglikelihoods(requests)
            rates[name].append(questions / (time.perf_counter() - start))
        print(
            f"  MedQA run {repeat + 1} ({', '.join(order)}): "
            + ", ".join(f"{name} {rates[name][-1]:.2f}" for name in names)
            + " questions/s"
        )
    reference = names[0]
    for name in names[1:]:
        ratios = [ours / theirs for ours, theirs in zip(rates[name], rates[reference], strict=True)]
        agree, agree_per_option = (
            sum(
                a == b
                for a, b in zip(choices_of(scores[name]), choices_of(scores[other]), strict=True)
            )
            for other in (reference, "per option")
        )
        gap = max(abs(a - b) for a, b in zip(scores[name], scores["per option"], strict=True))
        per_option = [
            ours / theirs for ours, theirs in zip(rates[name], rates["per option"], strict=True)
        ]
        print(
            f"  {name}: median {statistics.median(rates[name]):.2f} questions/s, "
            f"{statistics.median(ratios):.2f}x transformers' "
            f"({', '.join(f'{r:.2f}' for r in ratios)}), "
            f"{statistics.median(per_option):.2f}x per option's "
            f"({', '.join(f'{r:.2f}' for r in per_option)}); same choice as transformers "
            f"{agree}/{questions}, as per option {agree_per_option}/{questions}; "
            f"largest difference from per option {gap:.2e}"
        )


if __name__ == "__main__":
    main()
