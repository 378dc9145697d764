"""``medharness train CONFIG`` with two faults a test can ask for through the environment.

STEP_DELAY_S: each optimiser step takes at least this long, so a test watching log.jsonl can
kill the training at the step it chose before the next one ends. KILL_DURING_SAVE=N: the
process SIGKILLs itself in the middle of its N-th checkpoint save, after the weights and the
optimizer are written and before its RNG state and the seal (KILL_RANK=R: only the process of
rank R does). Neither changes what is computed. Runs as a script, also under
``accelerate launch``.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

from transformers import Trainer

from medharness.cli import main

step_delay = float(os.environ.get("STEP_DELAY_S", "0"))
kill_during_save = int(os.environ.get("KILL_DURING_SAVE", "0"))
kill_rank = os.environ.get("KILL_RANK", os.environ.get("RANK", "0"))
saves = 0
training_step = Trainer.training_step
save_rng_state = Trainer._save_rng_state


def slow_training_step(self: Trainer, *args: Any, **kwargs: Any) -> Any:
    started = time.monotonic()
    loss = training_step(self, *args, **kwargs)
    time.sleep(max(0.0, step_delay - (time.monotonic() - started)))
    return loss


def killed_save(self: Trainer, output_dir: str) -> None:
    global saves
    saves += 1
    if saves == kill_during_save and os.environ.get("RANK", "0") == kill_rank:
        os.kill(os.getpid(), signal.SIGKILL)
    save_rng_state(self, output_dir)


Trainer.training_step = slow_training_step  # type: ignore[method-assign]
Trainer._save_rng_state = killed_save  # type: ignore[method-assign]
sys.exit(main(["train", *sys.argv[1:]]))
