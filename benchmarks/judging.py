"""Judging throughput with the built-in judge, and what the verdict cache saves on a re-run.

Takes the first N MedQuAD test questions, with the first sentences of each reference as
the answer to grade (judging cost depends on prompt and verdict length, not on who wrote the
answer), and judges them with SmolLM2-135M-Instruct against the medical-qa rubric through
``medharness.judge.judge_logs``, as a run does: once with an empty verdict cache, then again
in the same process with the cache filled. Prints answers per second, both wall times and
their ratio, and how readable the judge's verdicts were.

    MEDHARNESS_DATA_DIR=... .venv/bin/python benchmarks/judging.py --limit 24
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=24)
    parser.add_argument("--model", default="smollm2-135m-instruct", help="the judge")
    parser.add_argument("--max-new-tokens", type=int, default=160)
    args = parser.parse_args()
    os.environ["MEDHARNESS_CACHE"] = tempfile.mkdtemp(prefix="judging-bench-")

    from medharness.config import JurySettings, ModelEntry
    from medharness.core.records import GenerationRow
    from medharness.evaluate import input_row
    from medharness.judge import JudgedLog, Jury, judge_logs
    from medharness.tasks import get_task
    from medharness.tasks.judging.rubric import load_rubric

    data = Path(os.environ["MEDHARNESS_DATA_DIR"]) / "medquad"
    samples = get_task("medquad_gen").load(data).samples[: args.limit]
    rows = [
        GenerationRow(
            doc_id=s.doc_id, target=s.target, prediction=". ".join(s.target.split(". ")[:2]),
            metrics={},
        )
        for s in samples
    ]  # fmt: skip
    log = JudgedLog("bench", list(rows), {s.doc_id: input_row(s) for s in samples})
    jury = Jury(
        [ModelEntry(name="judge", model=args.model)],
        load_rubric("medical-qa", Path.cwd()),
        JurySettings(max_new_tokens=args.max_new_tokens),
    )
    clock = time.perf_counter()
    (judged,) = judge_logs(jury, [log])
    cold = time.perf_counter() - clock
    clock = time.perf_counter()
    judge_logs(jury, [log])
    warm = time.perf_counter() - clock

    verdicts = [
        row.judgments[0] for row in judged if isinstance(row, GenerationRow) and row.judgments
    ]
    complete = sum(len(v.scores) == 4 for v in verdicts)
    unreadable = sum(not v.scores for v in verdicts)
    retried = sum(v.attempts > 1 for v in verdicts)
    print(f"answers judged: {len(verdicts)} (judge {args.model}, {args.max_new_tokens} tokens)")
    print(f"cold cache: {cold:.1f} s with loading the judge, {len(verdicts) / cold:.3f} answers/s")
    print(f"warm cache: {warm:.3f} s wall ({cold / warm:.0f}x less), judge not loaded")
    print(f"verdicts: {complete} with all 4 scores, {unreadable} with none, {retried} retried")


if __name__ == "__main__":
    main()
