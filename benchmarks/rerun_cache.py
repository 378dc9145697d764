"""Re-running an unchanged evaluation: the second run reuses every finished sample log.

Runs `medharness eval` on the first N MedQA 4-option test questions twice into the same
folder (whole processes, built-in SmolLM2, CPU), prints both wall times, their ratio, and
whether results.json is identical.

    MEDHARNESS_DATA_DIR=... .venv/bin/python benchmarks/rerun_cache.py --limit 200
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=200)
    args = parser.parse_args()

    from harness.models import builtin_model_dir

    builtin_model_dir()  # convert once, outside the timings
    out = Path(tempfile.mkdtemp(prefix="rerun-bench-"))
    command = [
        str(BIN / "medharness"),
        "eval",
        "--model",
        "smollm2-135m-instruct",
        "--tasks",
        "medqa_4opt",
        "--limit",
        str(args.limit),
        "--out",
        str(out),
    ]
    seconds, results = [], []
    for _ in range(2):
        start = time.perf_counter()
        subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        seconds.append(time.perf_counter() - start)
        results.append(json.loads((out / "eval-smollm2-135m-instruct/results.json").read_text()))
    print(f"questions {args.limit}")
    print(f"first run:  {seconds[0]:7.1f} s")
    print(f"second run: {seconds[1]:7.1f} s")
    print(f"ratio second / first: {seconds[1] / seconds[0]:.3f}")
    print(f"identical results.json: {results[0] == results[1]}")


if __name__ == "__main__":
    main()
