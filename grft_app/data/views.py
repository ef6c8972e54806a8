"""A training dataset seen through a transform: once per image for training, twice for the SCL probe."""

from __future__ import annotations

from collections.abc import Callable

from torch.utils.data import Dataset


class Transformed(Dataset):
    """Wraps a dataset of ``(raw_image, label)``: returns ``(transform(raw), label)``."""

    def __init__(self, raw: Dataset, transform: Callable):
        self.raw, self.transform = raw, transform

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, i: int):
        image, label = self.raw[i]
        return self.transform(image), label


class TwoViews(Transformed):
    """Two augmented views of each image: ``([transform(raw), transform(raw)], label)``."""

    def __getitem__(self, i: int):
        image, label = self.raw[i]
        return [self.transform(image), self.transform(image)], label
