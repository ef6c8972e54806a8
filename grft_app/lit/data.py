"""Loaders for one task: training, validation, test, and the fixed-order probe loader."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..data.splits import DataSplits
from .sampling import EpochSeededSampler, SeededItems

PROBE_EPOCH = -1  # the probe's augmentation stream, apart from every training epoch's


class TaskDataModule(L.LightningDataModule):
    """``val_views``/``test_views``: the splits Lightning's validation and test loops walk, one
    loader per view, in the order of the module's views (a split seen by raw and EMA weights is
    walked twice)."""

    def __init__(
        self,
        splits: DataSplits,
        batch_size: int,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        drop_last: bool = True,
        val_views: Sequence[str] = ("val",),
        test_views: Sequence[str] = ("test",),
    ):
        super().__init__()
        self.splits = splits
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.drop_last = drop_last
        self.val_views, self.test_views = list(val_views), list(test_views)

    def _loader(
        self, dataset: Dataset, batch_size: int, shuffle: bool, sampler=None, drop_last: bool = False
    ) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=self.splits.collate_fn,
            drop_last=drop_last,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled per (seed, epoch); the short last batch dropped (``drop_last``), as the reference
        code does: every method sees the same full batches, and mixup (which pairs images) never
        meets an odd one. Under DDP each rank drops its own short last batch."""
        size, world = len(self.splits.train), self.trainer.world_size if self.trainer is not None else 1
        per_rank = -(-size // world)
        if self.drop_last and per_rank < self.batch_size:
            raise ValueError(
                f"the training split has {size} items ({per_rank} per process), "
                f"fewer than batch_size={self.batch_size}: "
                "with the short last batch dropped nothing would train; lower batch_size"
            )
        sampler = EpochSeededSampler(size, self.seed, self._current_epoch)
        return self._loader(
            SeededItems(self.splits.train, self.seed),
            self.batch_size,
            shuffle=False,
            sampler=sampler,
            drop_last=self.drop_last,
        )

    def _current_epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def _eval_loaders(self, views: Sequence[str]) -> list[DataLoader]:
        loaders = []
        for split in views:
            dataset = getattr(self.splits, split)
            if dataset is not None:
                loaders.append(
                    self._loader(dataset, self.eval_batch_size, shuffle=False, sampler=shard_without_padding(dataset))
                )
        return loaders

    def val_dataloader(self):
        return self._eval_loaders(self.val_views)

    def test_dataloader(self):
        return self._eval_loaders(self.test_views)

    def probe_dataloader(self, max_batches: int | None = None, batch_size: int | None = None) -> DataLoader:
        """The probe walks the training set in one seeded random order, the same on every pass.

        A fixed order matters for ``subsets > 1``, which measures each part's loss and then takes
        gradients on the best part in a second pass. With ``drop_last`` (the protocol's) the short
        last batch is dropped, as the reference's gradient pass walks a training loader that drops
        it; then ``max_batches`` applies; then, under DDP, rank r probes batches r, r+W, ... of that
        one sequence and the gradients are summed across ranks: the selection equals a single
        process's on the same data. The loader's ``batch_sampler`` (``ProbeBatches``) also knows
        how many batches and images the probe walks over all ranks (the record's ``probe_facts``).
        """
        batch_size = batch_size or self.batch_size
        dataset = self.splits.probe
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(self.seed)).tolist()
        # Keys (PROBE_EPOCH, index): each item's two views are seeded by the item alone, so both
        # probe passes, and every rank layout, see the same augmented images.
        keys = [(PROBE_EPOCH, i) for i in order]
        batches = [keys[i : i + batch_size] for i in range(0, len(keys), batch_size)]
        if self.drop_last and batches and len(batches[-1]) < batch_size:
            batches = batches[:-1]
        if not batches:
            raise ValueError(
                f"the probe data has {len(dataset)} items, fewer than the probe's batch size {batch_size}: "
                "with the short last batch dropped (protocol.drop_last) nothing would be probed; "
                "lower probe.batch_size (or batch_size)"
            )
        if max_batches is not None:
            batches = batches[:max_batches]
        rank, world = 0, 1
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        return DataLoader(
            SeededItems(dataset, self.seed),
            batch_sampler=ProbeBatches(batches, rank, world),
            num_workers=self.num_workers,
            collate_fn=self.splits.collate_fn,
            pin_memory=torch.cuda.is_available(),
        )


class ProbeBatches(Sequence):
    """This rank's share (batches r, r+W, ...) of the probe's batches, and the extent of all of them."""

    def __init__(self, batches: list[list], rank: int = 0, world: int = 1):
        self.mine = batches[rank::world]
        self.extent = {"batches": len(batches), "images": sum(len(b) for b in batches)}

    def __len__(self) -> int:
        return len(self.mine)

    def __getitem__(self, index):
        return self.mine[index]


def probe_extent(loader: Any) -> dict[str, int]:
    """How many batches and images the probe walked, over all ranks (empty for a loader not made here)."""
    sampler = getattr(loader, "batch_sampler", None)
    return dict(sampler.extent) if isinstance(sampler, ProbeBatches) else {}


class _UnpaddedShard(DistributedSampler):
    """Rank r evaluates items r, r+W, ...: every item exactly once (Lightning's default sampler
    pads the shards with repeated items, which would count some test images twice)."""

    def __iter__(self):
        return iter(range(self.rank, len(self.dataset), self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, len(self.dataset), self.num_replicas))


def shard_without_padding(dataset: Dataset) -> DistributedSampler | None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return _UnpaddedShard(dataset, shuffle=False)
    return None
