"""Re-running an unchanged evaluation: the second run reuses every finished sample log.

Runs `medharness eval` on the first N MedQA 4-option test questions twice into the same
folder (whole processes, built-in SmolLM2, CPU), prints both wall times, their ratio, and
whether results.json is identical.

    MEDHARNESS_DATA_DIR=... .venv/bin/python benchmarks/rerun_cache.py --limit 200
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from common import medharness_eval, timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=200)
    args = parser.parse_args()

    from medharness.models.builtin import builtin_model_dir

    builtin_model_dir()  # convert once, outside the timings
    out = Path(tempfile.mkdtemp(prefix="rerun-bench-"))
    command = medharness_eval("medqa_4opt", args.limit, out)
    seconds, results = [], []
    for _ in range(2):
        seconds.append(timed(command))
        results.append(json.loads((out / "eval-smollm2-135m-instruct/results.json").read_text()))
    print(f"questions {args.limit}")
    print(f"first run:  {seconds[0]:7.1f} s")
    print(f"second run: {seconds[1]:7.1f} s")
    print(f"ratio second / first: {seconds[1] / seconds[0]:.3f}")
    print(f"identical results.json: {results[0] == results[1]}")


if __name__ == "__main__":
    main()
