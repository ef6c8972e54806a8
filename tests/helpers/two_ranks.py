"""Two CPU processes joined by gloo: how the probe's tests check that DDP selects what one process does."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _main(rank: int, world: int, init: str, out: str, work: Callable[[int, int], object]) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        result = work(rank, world)
        if rank == 0:
            torch.save(result, out)
    finally:
        dist.destroy_process_group()


def on_two_ranks(work: Callable[[int, int], object], folder: Path) -> object:
    """``work(rank, world)`` on 2 ranks (a module-level function, so the processes can import it);
    returns rank 0's result."""
    out = folder / "rank0.pt"
    mp.spawn(_main, args=(2, f"file://{folder / 'rendezvous'}", str(out), work), nprocs=2, join=True)
    return torch.load(out)
