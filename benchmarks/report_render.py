"""Rendering cost of the comparative report: 10 models x every full test set.

Builds the run once with scripted fake models (80-word answers that differ per model, scores
that differ per model), then times `medharness report` as a whole process and reports the
file size. Target: under 5 s and under 15 MB.

    MEDHARNESS_DATA_DIR=... .venv/bin/python benchmarks/report_render.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

BIN = Path(sys.executable).parent
MODELS = 10


def main() -> None:
    from medharness.tasks import TASKS

    work = Path(tempfile.mkdtemp(prefix="report-bench-"))
    models = []
    for index in range(MODELS):
        script = work / f"model{index}.yaml"
        script.write_text(yaml.safe_dump({"babble_words": 80, "seed": index}))
        models.append({"name": f"model-{index}", "model": f"fake:{script}"})
    config = work / "bench.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "bench",
                "models": models,
                "tasks": list(TASKS),
                "output_dir": str(work),
            }
        )
    )
    start = time.perf_counter()
    subprocess.run(
        [str(BIN / "medharness"), "run", str(config)],
        check=True,
        stderr=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    print(
        f"built the run ({MODELS} models x {len(TASKS)} full tasks, report included) "
        f"in {time.perf_counter() - start:.1f} s"
    )
    timings = []
    for _ in range(5):
        start = time.perf_counter()
        subprocess.run(
            [
                str(BIN / "medharness"),
                "report",
                str(work / "bench"),
                "-o",
                str(work / "report.html"),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        timings.append(time.perf_counter() - start)
    size = (work / "report.html").stat().st_size
    samples = sum(1 for _ in (work / "bench" / "samples").rglob("*.jsonl"))
    print(f"sample files: {samples}")
    print(
        "medharness report (whole process), 5 runs: "
        + ", ".join(f"{t:.2f} s" for t in timings)
        + f"; median {sorted(timings)[2]:.2f} s"
    )
    print(f"report.html: {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
