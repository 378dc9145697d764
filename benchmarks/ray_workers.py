"""The quickstart run on a Ray cluster of this machine: 1 worker (2 torch threads) vs 2 workers
(1 thread each, one per model), with the local executor (2 threads) beside them; whole
commands timed (Ray connection, model loads and the driver's writes included), alternating
the order, the median of --repeats. Then where the time went, from each Ray run's manifest:
model load per worker, the units' compute, and what is left (connection, scheduling, moving
rows, the driver's writes), and the size and pickling time of the rows the units sent back.
Every run's results.json and sample logs are compared with the local run's. First, how many
units and rows a second this process takes in (a fake model that computes nothing, units of
16 and of 256 samples): what bounds a large cluster.

The cluster is one head node on loopback with 2 CPUs (`ray start --head --num-cpus=2`); a
model entry asking for `num_cpus: 2` gets the whole machine (one worker at a time), one
asking for `num_cpus: 1` shares it with the other model's worker.

    MEDHARNESS_DATA_DIR=... .venv/bin/python benchmarks/ray_workers.py --repeats 2
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import pickle
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from common import BIN, ROOT, timed

HOST = "127.0.0.2"  # Ray replaces 127.0.0.1 by the machine's outward address


def config_with(work: Path, name: str, num_cpus: float, limits: tuple[int, int]) -> Path:
    """The quickstart config, each model asking the cluster for ``num_cpus``."""
    config = yaml.safe_load((ROOT / "configs" / "quickstart.yaml").read_text())
    config.update(name="quickstart", data_dir=os.environ["MEDHARNESS_DATA_DIR"])
    for model in config["models"]:
        model["resources"] = {"num_cpus": num_cpus}
    config["tasks"] = [
        {"name": "medquad_gen", "limit": limits[0]},
        {"name": "medqa_4opt", "limit": limits[1]},
    ]
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def start_cluster() -> str:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]
    subprocess.run(
        [str(BIN / "ray"), "start", "--head", f"--node-ip-address={HOST}", f"--port={port}",
         "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats"],
        check=True, capture_output=True,
    )  # fmt: skip
    return f"{HOST}:{port}"


def where_time_went(run: Path, wall: float) -> dict[str, Any]:
    manifest = json.loads((run / "manifest.json").read_text())
    units = manifest["executor"]["units"]
    models = list(manifest["models"])
    loads = [manifest["timings_s"][name]["load_s"] for name in models]
    ready = [manifest["timings_s"][name]["worker_ready_s"] for name in models]
    rows = [
        json.loads(line)
        for path in (run / "samples").glob("*/*.jsonl")
        for line in path.read_text().splitlines()
    ]
    clock = time.perf_counter()
    pickled = pickle.dumps(rows)
    pickling = time.perf_counter() - clock
    compute = sum(unit["seconds"] for unit in units)
    return {
        "units": len(units),
        "load_s": loads,
        "worker_ready_s": ready,
        "compute_s": round(compute, 1),
        "rows_bytes": len(pickled),
        "pickle_s": round(pickling, 4),
        "wall_s": round(wall, 1),
        "driver_total_s": manifest["timings_s"]["total"],
    }


def driver_rate(work: Path, address: str, shard_size: int) -> dict[str, Any]:
    """How fast this process takes units in: a fake model (no compute) with 2 workers on
    three whole tasks (9,258 samples), in units of ``shard_size``; its rows written as the
    local executor writes them."""
    script = work / "instant.yaml"
    script.write_text("babble_words: 40\n", encoding="utf-8")
    config = work / "instant-run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "instant",
                "data_dir": os.environ["MEDHARNESS_DATA_DIR"],
                "models": [
                    {"name": "fake", "model": f"fake:{script}", "resources": {"replicas": 2}}
                ],
                "tasks": ["medmcqa", "medqa_mainland", "medquad_gen"],
                "ray": {"shard_size": shard_size},
            }
        ),
        encoding="utf-8",
    )
    out = work / f"instant-{shard_size}"
    command = [str(BIN / "medharness"), "run", str(config), "--out", str(out)]
    wall = timed([*command, "--executor", "ray", "--address", address])
    manifest = json.loads((out / "instant" / "manifest.json").read_text())
    units = manifest["executor"]["units"]
    rows = sum(unit["stop"] - unit["start"] for unit in units)
    return {
        "units": len(units),
        "rows": rows,
        "wall_s": round(wall, 1),
        "units_per_s": round(len(units) / wall, 1),
        "rows_per_s": round(rows / wall),
        "worker_compute_s": round(sum(unit["seconds"] for unit in units), 2),
    }


def folder_of(work: Path, label: str, repeat: int) -> Path:
    return work / f"{label.replace(' ', '-').replace(',', '')}-{repeat}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--limit", type=int, default=24, help="MedQuAD questions")
    parser.add_argument("--medqa-limit", type=int, default=40, help="MedQA questions")
    parser.add_argument("--driver-only", action="store_true", help="only the driver's rate")
    args = parser.parse_args()
    limits = (args.limit, args.medqa_limit)

    # a loopback cluster for the benchmark alone: no token (a token file left in ~/.ray by
    # an earlier local ray.init() would otherwise switch the cluster to token mode)
    os.environ["RAY_AUTH_MODE"] = "disabled"
    work = Path(tempfile.mkdtemp(prefix="medharness-ray-"))
    address = start_cluster()
    on_ray = ["--executor", "ray", "--address", address]
    runs = {
        "local executor": (config_with(work, "local", 1, limits), []),
        "ray, 1 worker": (config_with(work, "one", 2, limits), on_ray),
        "ray, 2 workers": (config_with(work, "two", 1, limits), on_ray),
    }
    seconds: dict[str, list[float]] = {label: [] for label in runs}
    try:
        for shard_size in (16, 256):
            rate = driver_rate(work, address, shard_size)
            print(f"driver, units of {shard_size}: {json.dumps(rate)}", flush=True)
        if args.driver_only:
            return
        for repeat in range(args.repeats):
            for label in list(runs) if repeat % 2 == 0 else list(reversed(runs)):
                config, flags = runs[label]
                out = folder_of(work, label, repeat)
                command = [str(BIN / "medharness"), "run", str(config), "--out", str(out), *flags]
                seconds[label].append(timed(command))
                print(f"repeat {repeat}: {label} {seconds[label][-1]:.1f} s", flush=True)
                if flags:
                    detail = where_time_went(out / "quickstart", seconds[label][-1])
                    print(f"  {json.dumps(detail)}", flush=True)
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], capture_output=True, check=False)
    medians = {label: statistics.median(values) for label, values in seconds.items()}
    for label, value in medians.items():
        print(f"{label}: median {value:.1f} s of {[round(v, 1) for v in seconds[label]]}")
    two = medians["ray, 2 workers"]
    print(f"2 workers vs 1 worker: {medians['ray, 1 worker'] / two:.2f}x faster")
    print(f"2 workers vs the local executor: {medians['local executor'] / two:.2f}x faster")
    local = folder_of(work, "local executor", 0) / "quickstart"
    names = ["results.json", *(str(p.relative_to(local)) for p in local.glob("samples/*/*.jsonl"))]
    for label in list(runs)[1:]:
        other = folder_of(work, label, 0) / "quickstart"
        same = all(filecmp.cmp(local / n, other / n, shallow=False) for n in names)
        print(f"{label}: results.json and {len(names) - 1} sample logs as the local run's: {same}")


if __name__ == "__main__":
    main()
