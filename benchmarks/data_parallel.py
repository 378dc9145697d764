"""Data-parallel evaluation: `medharness run` in one process vs `accelerate launch
--num_processes N` of the same config, whole commands timed (start-up and model loads
included), alternating which runs first, the median of --repeats; then the two runs'
results.json and sample logs compared byte for byte.

The config: the built-in model on the first --medqa-limit MedQA 4-option questions and the
first --limit MedQuAD questions (--max-new-tokens). On a CPU the processes split its cores
(threads = cores / processes); on a machine with N GPUs each process takes one.

    MEDHARNESS_DATA_DIR=... .venv/bin/python benchmarks/data_parallel.py --processes 2
"""

from __future__ import annotations

import argparse
import filecmp
import os
import statistics
import sys
import tempfile
from pathlib import Path

import yaml
from common import BIN, timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--limit", type=int, default=48, help="MedQuAD questions")
    parser.add_argument("--medqa-limit", type=int, default=96, help="MedQA questions")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="medharness-dp-"))
    config = work / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "dp",
                "data_dir": os.environ["MEDHARNESS_DATA_DIR"],
                "models": [{"name": "base", "model": "smollm2-135m-instruct"}],
                "tasks": [
                    {"name": "medqa_4opt", "limit": args.medqa_limit},
                    {"name": "medquad_gen", "limit": args.limit},
                ],
                "generation": {"max_new_tokens": args.max_new_tokens},
            }
        ),
        encoding="utf-8",
    )
    launch = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
        f"--num_processes={args.processes}", "--num_machines=1", "--mixed_precision=no",
        "--dynamo_backend=no", "-m", "medharness",
    ]  # fmt: skip
    commands = {
        "one process": lambda out: [str(BIN / "medharness"), "run", str(config), "--out", out],
        f"{args.processes} processes": lambda out: [*launch, "run", str(config), "--out", out],
    }
    seconds: dict[str, list[float]] = {label: [] for label in commands}
    for repeat in range(args.repeats):
        order = list(commands) if repeat % 2 == 0 else list(reversed(commands))
        for label in order:
            out = work / f"{label.replace(' ', '-')}-{repeat}"
            seconds[label].append(timed(commands[label](str(out))))
            print(f"repeat {repeat}: {label} {seconds[label][-1]:.1f} s", flush=True)
    medians = {label: statistics.median(values) for label, values in seconds.items()}
    single, parallel = medians.values()
    print(
        ", ".join(f"{label} median {value:.1f} s" for label, value in medians.items())
        + f"; speed-up {single / parallel:.2f}x"
    )
    first = [work / f"{label.replace(' ', '-')}-0" / "dp" for label in commands]
    names = ["results.json", "samples/base/medqa_4opt.jsonl", "samples/base/medquad_gen.jsonl"]
    same = all(filecmp.cmp(first[0] / n, first[1] / n, shallow=False) for n in names)
    print(f"results.json and sample logs identical: {same}")


if __name__ == "__main__":
    main()
