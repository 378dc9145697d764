"""``python run_paused.py STAGE MARK ARGS...``: ``medharness ARGS...`` with one stage of the
run held: when the run reaches STAGE it makes the file MARK and waits there, so a test kills
it provably inside that stage rather than racing a timer."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import medharness.run.results
import medharness.run.runner
from medharness.cli import main

STAGES = {
    "aggregating": (medharness.run.results, "aggregate"),
    "writing the report": (medharness.run.runner, "render_run_report"),
}


def held(function: Callable[..., Any], mark: Path) -> Callable[..., Any]:
    def waiting(*args: Any, **kwargs: Any) -> Any:
        mark.touch()
        time.sleep(600)  # the test kills the run here
        return function(*args, **kwargs)

    return waiting


if __name__ == "__main__":
    stage, mark, *arguments = sys.argv[1:]
    module, name = STAGES[stage]
    setattr(module, name, held(getattr(module, name), Path(mark)))
    sys.exit(main(arguments))
