"""ROUGE-1/2/L/Lsum and BLEU over every answered MedQuAD pair: tasks/textscore vs the references.

Each of the 16,407 answers is scored against another answer (a fixed shuffle), as the
prediction. One side: medharness's ``rouge_scores`` and ``bleu_statistics`` plus corpus BLEU
from the summed statistics (median of three timings, in process). The other: rouge_score
0.1.2 ``RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"])`` pair by pair and sacrebleu's
``BLEU().corpus_score`` (one timing; ~10 minutes on a 2-core CPU). Prints both times, the
ratio, the largest per-pair difference of each ROUGE type and whether the BLEU statistics and
score are identical.

    MEDHARNESS_DATA_DIR=... .venv/bin/python benchmarks/metrics_vs_reference.py [--limit N]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="first N pairs only")
    args = parser.parse_args()

    import sacrebleu
    from rouge_score import rouge_scorer

    from medharness.tasks.medquad import load_pairs
    from medharness.tasks.metrics.text import ROUGE_TYPES, bleu_from_statistics
    from medharness.tasks.textscore import bleu_statistics, rouge_scores

    pairs, _ = load_pairs(Path(os.environ["MEDHARNESS_DATA_DIR"]) / "medquad")
    answers = [pair.answer for pair in pairs]
    order = list(range(len(answers)))
    random.Random(0).shuffle(order)
    predictions = answers[: args.limit]
    references = [answers[j] for j in order][: args.limit]

    def fast() -> tuple[dict[str, np.ndarray], np.ndarray, float]:
        stats = bleu_statistics(predictions, references)
        return rouge_scores(predictions, references), stats, bleu_from_statistics(stats.sum(0))

    seconds = []
    for _ in range(3):
        start = time.perf_counter()
        rouge, stats, bleu = fast()
        seconds.append(time.perf_counter() - start)
    fast_seconds = statistics.median(seconds)

    start = time.perf_counter()
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES))
    expected = [scorer.score(ref, pred) for pred, ref in zip(predictions, references, strict=True)]
    metric = sacrebleu.BLEU()
    expected_bleu = metric.corpus_score(predictions, [references]).score
    reference_seconds = time.perf_counter() - start
    expected_stats = np.asarray(metric._extract_corpus_statistics(predictions, [references]))

    print(f"pairs {len(predictions)}")
    print(
        f"medharness textscore: {fast_seconds:8.2f} s (median of 3: "
        + ", ".join(f"{s:.2f}" for s in seconds)
        + ")"
    )
    print(f"rouge_score + sacrebleu: {reference_seconds:8.2f} s")
    speedup = reference_seconds / fast_seconds
    print(f"ratio: {fast_seconds / reference_seconds:.5f} ({speedup:.0f}x faster)")
    for name in ROUGE_TYPES:
        diff = max(abs(e[name].fmeasure - v) for e, v in zip(expected, rouge[name], strict=True))
        print(f"max |difference| {name}: {diff:.3g}")
    print(f"BLEU statistics identical: {bool((expected_stats == stats).all())}")
    print(f"corpus BLEU: {bleu!r} vs sacrebleu {expected_bleu!r}")


if __name__ == "__main__":
    main()
