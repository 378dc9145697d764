"""A leaderboard of fine-tunes of one base: one loaded engine with each adapter swapped in
(``share_base_models: true``, the default) vs one load per entry (``false``).

Saves N rank-16 LoRA adapters of the built-in SmolLM2-135M-Instruct (random non-zero B, one
seed each, so each changes the answers), writes a config with one entry per adapter on the
first M MedQA questions, and runs ``medharness run`` on it both ways as whole processes,
alternating which goes first. Prints each run's wall time, the load seconds the manifests
record, the median ratio, and whether every sample log and results.json are identical.

    MEDHARNESS_DATA_DIR=... .venv/bin/python benchmarks/shared_base.py --adapters 4 --limit 20
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import yaml
from common import BIN, save_random_lora, timed


def write_config(folder: Path, adapters: list[str], limit: int, shared: bool) -> Path:
    config = {
        "name": "fine-tunes",
        "share_base_models": shared,
        "models": [
            {"name": f"tuned-{i}", "model": "smollm2-135m-instruct", "adapter": adapter}
            for i, adapter in enumerate(adapters)
        ],
        "tasks": [{"name": "medqa_4opt", "limit": limit}],
    }
    path = folder / f"shared-{shared}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def load_seconds(run: Path) -> float:
    timings = json.loads((run / "manifest.json").read_text())["timings_s"]
    return sum(t["load_s"] for t in timings.values() if isinstance(t, dict) and "load_s" in t)


def same_outputs(one: Path, other: Path) -> bool:
    logs = sorted(p.relative_to(one) for p in (one / "samples").rglob("*.jsonl"))
    files = [*logs, Path("results.json")]
    return bool(logs) and all((one / f).read_bytes() == (other / f).read_bytes() for f in files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapters", type=int, default=4)
    parser.add_argument("--limit", type=int, default=20, help="MedQA questions per entry")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from medharness.models.builtin import builtin_model_dir

    weights = builtin_model_dir()  # convert once, outside the timings
    adapters = [save_random_lora(weights, seed) for seed in range(args.adapters)]
    ratios = []
    for repeat in range(args.repeats):
        work = Path(tempfile.mkdtemp(prefix="shared-base-bench-"))
        seconds = {}
        order = (True, False) if repeat % 2 == 0 else (False, True)
        for shared in order:
            config = write_config(work, adapters, args.limit, shared)
            out = f"{work}/runs-{shared}"
            seconds[shared] = timed([str(BIN / "medharness"), "run", str(config), "--out", out])
        one, each = (work / f"runs-{shared}" / "fine-tunes" for shared in (True, False))
        ratios.append(seconds[False] / seconds[True])
        print(
            f"run {repeat + 1} ({'shared' if order[0] else 'one load each'} first): one engine "
            f"{seconds[True]:6.1f} s (loads {load_seconds(one):.1f} s), one load each "
            f"{seconds[False]:6.1f} s (loads {load_seconds(each):.1f} s), speed-up "
            f"{ratios[-1]:.2f}x; outputs identical: {same_outputs(one, each)}"
        )
    print(f"median speed-up of one engine: {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
