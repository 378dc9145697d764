"""What chain-of-thought scoring costs per question against log-likelihood scoring.

`medharness eval` of the built-in SmolLM2-135M-Instruct on the first N MedQA 4-option
questions, once with `--multiple-choice cot` (the model reasons, then a "Final Answer: X"
line is read) and once scoring the options by log-likelihood, alternating which goes first.
Prints seconds per question of each, their median ratio, the tokens the CoT answers spent,
and how the CoT answers were read (final-answer line, fallbacks, invalid, truncated).

    MEDHARNESS_DATA_DIR=... .venv/bin/python benchmarks/cot_cost.py --limit 10 --repeats 3
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import tempfile
from pathlib import Path

from common import medharness_eval, timed


def cot_rows(out: Path) -> list[dict]:
    log = next(out.rglob("samples/smollm2-135m-instruct/medqa_4opt.jsonl"))
    return [json.loads(line) for line in log.read_text().splitlines() if line]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cot-max-new-tokens", type=int, default=2048)
    args = parser.parse_args()

    from medharness.models.builtin import builtin_model_dir

    builtin_model_dir()  # convert once, outside the timings
    ratios, cot_per_q, ll_per_q = [], [], []
    for repeat in range(args.repeats):
        work = Path(tempfile.mkdtemp(prefix="cot-bench-"))
        cot = medharness_eval(
            "medqa_4opt", args.limit, work / "cot", "--multiple-choice", "cot",
            "--cot-max-new-tokens", str(args.cot_max_new_tokens),
        )  # fmt: skip
        loglikelihood = medharness_eval("medqa_4opt", args.limit, work / "loglikelihood")
        if repeat % 2 == 0:
            cot_s, ll_s = timed(cot), timed(loglikelihood)
        else:
            ll_s, cot_s = timed(loglikelihood), timed(cot)
        ratios.append(cot_s / ll_s)
        cot_per_q.append(cot_s / args.limit)
        ll_per_q.append(ll_s / args.limit)
        rows = cot_rows(work / "cot")
        tokens = [row["answer_tokens"] for row in rows if row.get("answer_tokens") is not None]
        rules = collections.Counter(row.get("extracted_by") for row in rows)
        print(
            f"run {repeat + 1} ({'cot' if repeat % 2 == 0 else 'log-likelihood'} first): "
            f"cot {cot_s:6.1f} s, log-likelihood {ll_s:6.1f} s, ratio {cot_s / ll_s:.1f}; "
            f"cot tokens per answer: mean {statistics.mean(tokens):.0f}, max {max(tokens)}; "
            f"read by: {dict(rules)}"
        )
    print(
        f"{args.limit} questions; median s/question: cot {statistics.median(cot_per_q):.2f}, "
        f"log-likelihood {statistics.median(ll_per_q):.2f}; median ratio "
        f"{statistics.median(ratios):.1f}x"
    )


if __name__ == "__main__":
    main()
