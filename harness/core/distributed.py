"""Which process of an ``accelerate launch`` (or torchrun) this is, and the few collectives
evaluation and training need to share work between processes. One process writes."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from datetime import timedelta
from functools import lru_cache
from typing import Any, TypeVar

T = TypeVar("T")
# An evaluation shard can take hours while the other processes wait for it at a gather.
COLLECTIVE_TIMEOUT = timedelta(days=7)


def is_main_process() -> bool:
    """True unless a launcher started this as a process other than rank 0."""
    return process_rank() == 0


def process_rank() -> int:
    return int(os.environ.get("RANK", "0"))


def process_count() -> int:
    """How many processes the launcher started (1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


@lru_cache(maxsize=1)
def _object_group() -> Any:
    """A gloo group for Python objects: the launcher's variables say where rank 0 listens.
    Training may already have started an NCCL group; objects go through gloo either way."""
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=COLLECTIVE_TIMEOUT)
        return dist.group.WORLD
    return dist.new_group(backend="gloo", timeout=COLLECTIVE_TIMEOUT)


def from_main(value: T) -> T:
    """Rank 0's ``value``, on every process (each passes its own; only rank 0's counts)."""
    if process_count() == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0, group=_object_group())
    return box[0]


def gather_on_main(value: T) -> list[T] | None:
    """Every process's ``value`` in rank order on rank 0; None on the others."""
    if process_count() == 1:
        return [value]
    import torch.distributed as dist

    gathered: list[Any] | None = [None] * process_count() if is_main_process() else None
    dist.gather_object(value, gathered, dst=0, group=_object_group())
    return gathered


@contextlib.contextmanager
def released_collectives() -> Iterator[None]:
    """Tear the process group down when the work inside ends: a gloo group still alive at
    interpreter exit aborts the process ("terminate called without an active exception").
    After work that ended well every process first waits for the others, so none tears its
    end down while a peer's last exchange (the main process saving, say) is still in flight;
    after an error it does not wait, since a peer may never arrive."""
    ended_well = False
    try:
        yield
        ended_well = True
    finally:
        if "torch.distributed" in sys.modules:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                if ended_well:
                    dist.barrier(group=_object_group())
                dist.destroy_process_group()
            _object_group.cache_clear()
