"""Generation with a LoRA adapter: left unmerged (plain PEFT) vs folded into fp32 weights.

Saves a LoRA adapter for the built-in SmolLM2-135M-Instruct (rank 16 on every linear layer,
random non-zero B so it changes the answers), then generates greedy answers to the first N
MedQuAD test questions twice in one process, in turn: through ``PeftModel`` as loaded, and
through ``load_model(..., adapter=...)``, which merges it (fp32). Prints generated tokens
per second of each, the ratio, and how many answers are identical.

    MEDHARNESS_DATA_DIR=... .venv/bin/python benchmarks/adapter_merge.py --limit 16
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from common import save_random_lora


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from medharness.models.builtin import builtin_model_dir
    from medharness.models.hf import HFModel
    from medharness.models.loading import load_model
    from medharness.tasks import get_task

    weights = builtin_model_dir()
    adapter = save_random_lora(weights)

    data = Path(os.environ["MEDHARNESS_DATA_DIR"]) / "medquad"
    questions = [s.prompt for s in get_task("medquad_gen").load(data).samples[: args.limit]]
    merged = load_model(str(weights), adapter=str(adapter))
    assert isinstance(merged, HFModel) and merged.adapter_merged
    unmerged = HFModel(
        model=PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(weights), adapter),
        tokenizer=merged.tokenizer,
        source=str(weights),
    )
    unmerged.model.eval()

    results = {}
    for label, model in (("unmerged", unmerged), ("merged", merged)):
        start = time.perf_counter()
        answers = model.generate(questions, args.max_new_tokens)
        seconds = time.perf_counter() - start
        tokens = sum(len(merged.tokenizer.encode(a, add_special_tokens=False)) for a in answers)
        results[label] = (answers, seconds, tokens / seconds)
        print(f"{label:9s} {seconds:7.1f} s  {tokens / seconds:6.1f} tokens/s")
    same = sum(a == b for a, b in zip(results["unmerged"][0], results["merged"][0], strict=True))
    print(f"ratio merged / unmerged tokens/s: {results['merged'][2] / results['unmerged'][2]:.2f}")
    print(f"identical answers: {same}/{len(questions)}")


if __name__ == "__main__":
    main()
