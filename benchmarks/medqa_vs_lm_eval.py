"""MedQA 4-option scoring: medharness vs `lm-eval run` (HF backend), same prompt and weights.

Runs both as whole processes, in turn, on the first N test questions with the built-in
SmolLM2-135M-Instruct on the CPU, then prints wall times, their ratio, and the agreement of
per-choice log-likelihoods and chosen letters.

    MEDHARNESS_DATA_DIR=... .venv/bin/python benchmarks/medqa_vs_lm_eval.py --limit 200
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from common import lm_eval_run, medharness_eval, timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    from medharness.models.builtin import builtin_model_dir

    weights = builtin_model_dir()  # convert once, outside the timings
    work = Path(tempfile.mkdtemp(prefix="medqa-bench-"))
    ours_s = timed(
        medharness_eval(
            "medqa_4opt", args.limit, work / "ours", "--batch-size", str(args.batch_size)
        )
    )
    theirs_s = timed(
        lm_eval_run(
            "medqa_4opt",
            args.limit,
            weights,
            work / "lm_eval",
            "--batch_size",
            str(args.batch_size),
        )
    )

    ours_file = work / "ours/eval-smollm2-135m-instruct/samples/smollm2-135m-instruct"
    ours = [
        json.loads(line)
        for line in (ours_file / "medqa_4opt.jsonl").read_text().split("\n")
        if line
    ]
    theirs_path = next((work / "lm_eval").rglob("samples_medqa_4opt_*.jsonl"))
    theirs = sorted(
        (json.loads(line) for line in theirs_path.read_text().splitlines() if line),
        key=lambda sample: sample["doc_id"],
    )
    worst = max(
        abs(mine - float(resp[0][0]))
        for row, sample in zip(ours, theirs, strict=True)
        for mine, resp in zip(row["loglikelihoods"], sample["resps"], strict=True)
    )
    theirs_chosen = [
        max(range(len(sample["resps"])), key=lambda i: float(sample["resps"][i][0][0]))
        for sample in theirs
    ]
    same = sum(row["chosen"] == chosen for row, chosen in zip(ours, theirs_chosen, strict=True))
    ours_acc = sum(row["metrics"]["acc"] for row in ours) / len(ours)
    theirs_acc = sum(sample["acc"] for sample in theirs) / len(theirs)
    print(f"questions: {len(ours)}  batch size: {args.batch_size}")
    print(f"medharness eval: {ours_s:7.1f} s   accuracy {ours_acc:.4f}")
    print(f"lm-eval run:     {theirs_s:7.1f} s   accuracy {theirs_acc:.4f}")
    print(f"time ratio medharness / lm-eval: {ours_s / theirs_s:.2f}")
    print(f"max |log-likelihood difference|: {worst:.2e}; same choice on {same}/{len(ours)}")


if __name__ == "__main__":
    main()
