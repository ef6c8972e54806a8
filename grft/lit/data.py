"""Loaders for one task: training, validation, test, and the fixed-order probe loader."""

from __future__ import annotations

from typing import Optional

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from ..data.splits import DataSplits
from .sampling import EpochSeededSampler, SeededItems


class TaskDataModule(L.LightningDataModule):
    def __init__(self, splits: DataSplits, batch_size: int, eval_batch_size: Optional[int] = None,
                 num_workers: int = 0, seed: int = 0):
        super().__init__()
        self.splits = splits
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.seed = seed

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool, sampler=None) -> DataLoader:
        return DataLoader(
            dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
            num_workers=self.num_workers, collate_fn=self.splits.collate_fn,
            persistent_workers=self.num_workers > 0, pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        sampler = EpochSeededSampler(len(self.splits.train), self.seed, self._current_epoch)
        return self._loader(SeededItems(self.splits.train, self.seed), self.batch_size, shuffle=False, sampler=sampler)

    def _current_epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def val_dataloader(self):
        if self.splits.val is None:
            return []
        return self._loader(self.splits.val, self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.splits.test, self.eval_batch_size, shuffle=False)

    def probe_dataloader(self, max_batches: Optional[int] = None, batch_size: Optional[int] = None) -> DataLoader:
        """The probe walks the training set in one seeded random order, the same on every pass.

        A fixed order matters for ``subsets > 1``, which measures each part's loss and then takes
        gradients on the best part in a second pass. Under DDP each rank probes its own shard and
        the gradients are summed across ranks.
        """
        batch_size = batch_size or self.batch_size
        dataset = self.splits.probe
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(self.seed)).tolist()
        if max_batches is not None:
            order = order[: max_batches * batch_size]
        subset = Subset(dataset, order)
        sampler = None
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            sampler = DistributedSampler(subset, shuffle=False, drop_last=False)
        return self._loader(subset, batch_size, shuffle=False, sampler=sampler)
