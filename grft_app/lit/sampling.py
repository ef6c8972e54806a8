"""Training-data randomness that depends on (seed, epoch, index) alone.

Why: a run resumed from a checkpoint, or run with a different number of loader workers, must see
exactly the batches and augmentations an uninterrupted run sees. Lightning creates (and
prefetches from) the training iterator at different moments on a fresh and on a resumed run, so
anything drawn from the global RNG there differs. Here the sampler draws each epoch's order from
its own generator and hands ``(epoch, index)`` keys to the dataset, which seeds the augmentation
of item ``index`` from that key in a forked RNG state.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


def mix(*values: int) -> int:
    """A 31-bit seed from several integers (stable across processes, unlike ``hash``)."""
    entropy = [v & 0xFFFFFFFFFFFFFFFF for v in values]  # SeedSequence takes non-negative ints
    return int(np.random.SeedSequence(entropy).generate_state(1)[0] & 0x7FFFFFFF)


@contextmanager
def seeded_rng(seed: int):
    """Seed torch (CPU), numpy and random inside the block; restore the outer states after.

    Only the CPU generator: data transforms draw from it alone. ``torch.manual_seed`` would also
    queue a lazy seed for every accelerator backend, each with a formatted stack trace, on every
    item: most of an epoch's time on a small model (and a queue that only grows).
    """
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class EpochSeededSampler(Sampler):
    """A shuffled order per epoch from ``(seed, epoch)``; yields ``(epoch, index)`` keys."""

    def __init__(self, length: int, seed: int, current_epoch: Callable[[], int]):
        self.length, self.seed, self.current_epoch = length, seed, current_epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = int(self.current_epoch())
        generator = torch.Generator().manual_seed(mix(self.seed, epoch))
        for index in torch.randperm(self.length, generator=generator).tolist():
            yield epoch, index


class SeededItems(Dataset):
    """Item ``index`` of ``dataset``, its random augmentation seeded by ``(seed, epoch, index)``."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        with seeded_rng(mix(self.seed, epoch, index)):
            return self.dataset[index]
