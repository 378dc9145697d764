"""Judging throughput with the built-in judge, and what the verdict cache saves on a re-run.

Takes the first N MedQuAD test questions, with the first sentences of each reference as
the answer to grade (judging cost depends on prompt and verdict length, not on who wrote the
answer), and judges them with SmolLM2-135M-Instruct against the medical-qa rubric through
``medharness.judge.judge_logs``, as a run does, for each scoring in turn in one process
(the judge writes its verdict; the judge's probabilities weight each score): once with an
empty verdict cache, then again with the cache filled. Prints answers per second, both wall
times and their ratio, and how readable the judge's verdicts were.

``--shared-prefix`` times instead the judge scored by probabilities two ways on one loaded
judge, alternating which goes first, the median of ``--repeats``: each answer's case run
once and its KV cache reused by every criterion (what the judge does), and the plain path,
every criterion's whole context run on its own. Prints answers/s of each, their ratio, and
the largest difference between the two paths' criterion scores.

    MEDHARNESS_DATA_DIR=... .venv/bin/python benchmarks/judging.py --limit 12
    MEDHARNESS_DATA_DIR=... .venv/bin/python benchmarks/judging.py --limit 12 --shared-prefix
    # on a CUDA machine, a vLLM judge:
    MEDHARNESS_DATA_DIR=... .venv-vllm/bin/python benchmarks/judging.py --limit 200 \
        --backend vllm --model PATH_OR_HUB_ID_OF_AN_8B_INSTRUCT_MODEL
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def empty_verdict_cache() -> None:
    """Point medharness's cache at a new, empty folder, so no verdict of an earlier run is
    reused; the built-in model, converted once, stays reachable there."""
    from medharness.core.cache import cache_root

    models = cache_root() / "models"
    os.environ["MEDHARNESS_CACHE"] = tempfile.mkdtemp(prefix="judging-bench-")
    if models.is_dir():
        (cache_root() / "models").symlink_to(models)


def answers_to_judge(limit: int) -> Any:
    """The first ``limit`` MedQuAD test questions, each answered by the first two sentences
    of its reference, as one log for ``judge_logs``."""
    from medharness.core.records import GenerationRow
    from medharness.evaluate import input_row
    from medharness.judge import JudgedLog
    from medharness.tasks import get_task

    data = Path(os.environ["MEDHARNESS_DATA_DIR"]) / "medquad"
    samples = get_task("medquad_gen").load(data).samples[:limit]
    rows = [
        GenerationRow(
            doc_id=s.doc_id, target=s.target, prediction=". ".join(s.target.split(". ")[:2]),
            metrics={},
        )
        for s in samples
    ]  # fmt: skip
    return JudgedLog("bench", list(rows), {s.doc_id: input_row(s) for s in samples})


def time_judging(
    log: Any, model: str, scoring: str, backend: str, max_new_tokens: int
) -> dict[str, Any]:
    """One scoring's figures: the judging with an empty cache (the judge loaded), then again
    with the verdicts cached, and how many verdicts had all, none or retried criteria."""
    from medharness.config import JudgeEntry, JurySettings
    from medharness.core.records import GenerationRow
    from medharness.judge import Jury, judge_logs
    from medharness.tasks.judging.rubric import load_rubric

    rubric = load_rubric("medical-qa", Path.cwd())
    judge = JudgeEntry(name="judge", model=model, scoring=scoring, backend=backend)
    jury = Jury([judge], rubric, JurySettings(max_new_tokens=max_new_tokens))
    clock = time.perf_counter()
    (judged,) = judge_logs(jury, [log])
    cold = time.perf_counter() - clock
    clock = time.perf_counter()
    judge_logs(jury, [log])
    warm = time.perf_counter() - clock
    verdicts = [
        row.judgments[0] for row in judged if isinstance(row, GenerationRow) and row.judgments
    ]
    return {
        "answers": len(verdicts),
        "criteria": len(rubric.criteria),
        "cold_s": cold,
        "answers_per_s": len(verdicts) / cold,
        "warm_s": warm,
        "complete": sum(len(v.scores) == len(rubric.criteria) for v in verdicts),
        "unreadable": sum(not v.scores for v in verdicts),
        "retried": sum(v.attempts > 1 for v in verdicts),
    }


@dataclass
class PlainPath:
    """A judge seen without its shared-prefix path: every context scored whole."""

    model: Any

    @property
    def chunk_size(self) -> int:
        return int(self.model.chunk_size)

    def loglikelihoods(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        return list(self.model.loglikelihoods(requests))


def compare_shared_prefix(jury: Any, log: Any, repeats: int) -> None:
    """Both paths of the judge scored by probabilities on the same chunks as a run makes,
    alternating which goes first; the judge is loaded once, outside the timings."""
    from medharness.evaluate import load_entry
    from medharness.judge import answer_key, weighted_verdicts

    pending = sorted(
        (
            (
                answer_key(log.inputs[row.doc_id], row.prediction),
                (log.inputs[row.doc_id], row.prediction),
            )
            for row in log.rows
        ),
        key=lambda item: len(item[1][1]) + len(item[1][0].target),
        reverse=True,
    )  # as judge_answers orders them
    model = load_entry(jury.judges[0])
    paths = {"shared prefix": model, "plain": PlainPath(model)}
    size = max(1, model.chunk_size // len(jury.rubric.criteria))  # as judge_new chunks
    chunks = [pending[i : i + size] for i in range(0, len(pending), size)]
    seconds: dict[str, list[float]] = {label: [] for label in paths}
    scores: dict[str, list[dict[str, float]]] = {}
    for repeat in range(repeats):
        order = list(paths) if repeat % 2 == 0 else list(reversed(paths))
        for label in order:
            clock = time.perf_counter()
            verdicts = [v for chunk in chunks for v in weighted_verdicts(paths[label], jury, chunk)]
            seconds[label].append(time.perf_counter() - clock)
            scores[label] = [v["scores"] for v in verdicts]
    medians = {label: statistics.median(values) for label, values in seconds.items()}
    # the plain path's own rounding noise: the same contexts batched otherwise (one answer a
    # chunk) move float32 scores too
    alone = [
        v["scores"] for item in pending for v in weighted_verdicts(PlainPath(model), jury, [item])
    ]
    differences = score_differences(scores["shared prefix"], scores["plain"])
    for label, values in seconds.items():
        runs = ", ".join(f"{value:.1f}" for value in values)
        print(
            f"{label}: median {medians[label]:.1f} s ({runs}), "
            f"{len(pending) / medians[label]:.3f} answers/s"
        )
    print(
        f"ratio {medians['plain'] / medians['shared prefix']:.2f}x answers/s; "
        f"{len(differences)} criterion scores, largest difference {max(differences):.2e}; "
        f"plain vs plain one answer a chunk: {max(score_differences(alone, scores['plain'])):.2e}"
    )


def score_differences(some: list[dict[str, float]], others: list[dict[str, float]]) -> list[float]:
    """Each criterion score's absolute difference between two scorings of the same answers."""
    return [
        abs(one[name] - other[name])
        for one, other in zip(some, others, strict=True)
        for name in other
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=12)
    parser.add_argument("--model", default="smollm2-135m-instruct", help="the judge")
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument(
        "--scoring", nargs="+", choices=["verdict", "probabilities"],
        default=["verdict", "probabilities"], help="each in turn, in one process",
    )  # fmt: skip
    parser.add_argument("--backend", choices=["auto", "hf", "vllm"], default="auto")
    parser.add_argument(
        "--shared-prefix", action="store_true",
        help="time the judge by probabilities with and without its shared-prefix path",
    )  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3, help="of --shared-prefix's timings")
    args = parser.parse_args()
    empty_verdict_cache()
    log = answers_to_judge(args.limit)
    print(f"judge {args.model}, {len(log.rows)} answers, backend {args.backend}")
    if args.shared_prefix:
        from medharness.config import JudgeEntry, JurySettings
        from medharness.judge import Jury
        from medharness.tasks.judging.rubric import load_rubric

        rubric = load_rubric("medical-qa", Path.cwd())
        judge = JudgeEntry(
            name="judge", model=args.model, scoring="probabilities", backend=args.backend
        )
        jury = Jury([judge], rubric, JurySettings(max_new_tokens=args.max_new_tokens))
        compare_shared_prefix(jury, log, args.repeats)
        return
    for scoring in args.scoring:
        found = time_judging(log, args.model, scoring, args.backend, args.max_new_tokens)
        print(
            f"{scoring}: cold cache {found['cold_s']:.1f} s with loading the judge "
            f"({found['answers_per_s']:.3f} answers/s); warm cache {found['warm_s']:.3f} s, "
            f"judge not loaded ({found['cold_s'] / found['warm_s']:.0f}x less); "
            f"{found['complete']} with all criteria, {found['unreadable']} with none, "
            f"{found['retried']} retried"
        )


if __name__ == "__main__":
    main()
