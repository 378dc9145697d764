"""Which process of an ``accelerate launch`` (or torchrun) this is; one process writes."""

from __future__ import annotations

import os


def is_main_process() -> bool:
    """True unless a launcher started this as a process other than rank 0."""
    return int(os.environ.get("RANK", "0")) == 0
