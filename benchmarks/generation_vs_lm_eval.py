"""MedQuAD generation: medharness vs lm-eval `generate_until` (HF backend), same prompts.

Both run as whole processes, in turn, on the first N MedQuAD test questions with the
built-in SmolLM2-135M-Instruct on the CPU, greedy, the same max new tokens and the model's
chat template. Prints wall times, generated tokens per second of each, their ratio, and
how many answers are identical string for string.

    MEDHARNESS_DATA_DIR=... .venv/bin/python benchmarks/generation_vs_lm_eval.py --limit 64
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from common import lm_eval_run, medharness_eval, timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8, help="medharness batch size")
    parser.add_argument("--lm-eval-batch-size", type=int, default=1, help="lm-eval's default: 1")
    args = parser.parse_args()

    from transformers import AutoTokenizer

    from medharness.models.builtin import builtin_model_dir

    weights = builtin_model_dir()  # convert once, outside the timings
    tokenizer = AutoTokenizer.from_pretrained(weights)
    work = Path(tempfile.mkdtemp(prefix="generation-bench-"))
    ours_s = timed(
        medharness_eval(
            "medquad_gen",
            args.limit,
            work / "ours",
            "--batch-size",
            str(args.batch_size),
            "--max-new-tokens",
            str(args.max_new_tokens),
        )
    )
    theirs_s = timed(
        lm_eval_run(
            "medquad_gen",
            args.limit,
            weights,
            work / "lm_eval",
            "--apply_chat_template",
            "--batch_size",
            str(args.lm_eval_batch_size),
            "--gen_kwargs",
            f"max_gen_toks={args.max_new_tokens}",
        )
    )
    ours_file = work / "ours/eval-smollm2-135m-instruct/samples/smollm2-135m-instruct"
    ours = [json.loads(line) for line in (ours_file / "medquad_gen.jsonl").open() if line.strip()]
    theirs_path = next((work / "lm_eval").rglob("samples_medquad_gen_*.jsonl"))
    theirs = sorted(
        (json.loads(line) for line in theirs_path.open() if line.strip()),
        key=lambda sample: sample["doc_id"],
    )
    ours_text = [row["prediction"] for row in ours]
    theirs_text = [sample["resps"][0][0].strip() for sample in theirs]
    same = sum(a == b for a, b in zip(ours_text, theirs_text, strict=True))

    def tokens(texts: list[str]) -> int:
        return sum(len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in texts)

    ours_rate, theirs_rate = tokens(ours_text) / ours_s, tokens(theirs_text) / theirs_s
    print(f"questions {len(ours)}, max new tokens {args.max_new_tokens}")
    print(f"medharness eval (batch {args.batch_size}): {ours_s:7.1f} s, {ours_rate:6.1f} tok/s")
    print(
        f"lm-eval run (batch {args.lm_eval_batch_size}):     {theirs_s:7.1f} s, "
        f"{theirs_rate:6.1f} tok/s"
    )
    print(f"tokens/s ratio medharness / lm-eval: {ours_rate / theirs_rate:.2f}")
    print(f"identical answers: {same}/{len(ours)}")


if __name__ == "__main__":
    main()
