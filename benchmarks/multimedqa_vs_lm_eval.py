"""The multimedqa suite (nine tasks): `medharness eval --tasks multimedqa` vs `lm-eval run`
on the same nine tasks, same prompts and weights.

Runs both as whole processes, alternating which goes first, on the first N questions of each
task (all of them without --limit) with the built-in SmolLM2-135M-Instruct on the CPU, then
prints each run's wall time, the median ratio, the suite average both ways (lm-eval's group
rule: accuracy weighted by task size) and how many questions got the same choice.

    MEDHARNESS_DATA_DIR=... .venv/bin/python benchmarks/multimedqa_vs_lm_eval.py --limit 40
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from common import lm_eval_run, medharness_eval, timed_with_cpu

from medharness.tasks.suites import SUITES


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def lm_eval_choices(out: Path, task: str) -> list[int]:
    """lm-eval's chosen option per question (the largest log-likelihood), in doc order."""
    samples = sorted(
        read_jsonl(next(out.rglob(f"samples_{task}_*.jsonl"))), key=lambda s: s["doc_id"]
    )
    return [max(range(len(s["resps"])), key=lambda i: float(s["resps"][i][0][0])) for s in samples]


def lm_eval_suite_average(out: Path, tasks: list[str]) -> tuple[float, int]:
    """lm-eval's per-task accuracies averaged by task size, as its group aggregation does."""
    results = json.loads(next(out.rglob("results_*.json")).read_text())
    sizes = {task: results["n-samples"][task]["effective"] for task in tasks}
    total = sum(sizes.values())
    accuracy = sum(results["results"][task]["acc,none"] * sizes[task] for task in tasks)
    return accuracy / total, total


def compare(ours: Path, theirs: Path, tasks: list[str]) -> tuple[int, int, float, float]:
    """Questions with the same choice, questions in all, and the two suite averages."""
    samples = ours / "eval-smollm2-135m-instruct/samples/smollm2-135m-instruct"
    same = total = 0
    for task in tasks:
        rows = read_jsonl(samples / f"{task}.jsonl")
        theirs_chosen = lm_eval_choices(theirs, task)
        same += sum(row["chosen"] == c for row, c in zip(rows, theirs_chosen, strict=True))
        total += len(rows)
    results = json.loads((ours / "eval-smollm2-135m-instruct/results.json").read_text())
    ours_average = results["suites"]["smollm2-135m-instruct"]["multimedqa"]["metrics"]["acc"]
    theirs_average, _ = lm_eval_suite_average(theirs, tasks)
    return same, total, ours_average["value"], theirs_average


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="questions per task")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from medharness.models.builtin import builtin_model_dir

    weights = builtin_model_dir()  # convert once, outside the timings
    tasks = list(SUITES["multimedqa"])
    ratios = []
    for repeat in range(args.repeats):
        work = Path(tempfile.mkdtemp(prefix="multimedqa-bench-"))
        ours_command = medharness_eval(
            "multimedqa", args.limit, work / "ours", "--batch-size", str(args.batch_size)
        )
        theirs_command = lm_eval_run(
            ",".join(tasks), args.limit, weights, work / "lm_eval", "--batch_size",
            str(args.batch_size),
        )  # fmt: skip
        if repeat % 2 == 0:
            (ours_s, ours_cpu), (theirs_s, theirs_cpu) = map(
                timed_with_cpu, (ours_command, theirs_command)
            )
        else:
            (theirs_s, theirs_cpu), (ours_s, ours_cpu) = map(
                timed_with_cpu, (theirs_command, ours_command)
            )
        same, total, ours_avg, theirs_avg = compare(work / "ours", work / "lm_eval", tasks)
        ratios.append(ours_s / theirs_s)
        first = "medharness" if repeat % 2 == 0 else "lm-eval"
        print(
            f"run {repeat + 1} ({first} first): medharness {ours_s:7.1f} s, lm-eval "
            f"{theirs_s:7.1f} s, ratio {ours_s / theirs_s:.2f} (CPU {ours_cpu:.0f} s vs "
            f"{theirs_cpu:.0f} s, {ours_cpu / theirs_cpu:.2f}); {total} questions, same "
            f"choice {same}/{total}; suite average {ours_avg:.6f} vs {theirs_avg:.6f}"
        )
    print(f"median time ratio medharness / lm-eval: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
