"""Two augmented views of each training image, for the supervised contrastive probe."""

from __future__ import annotations

from collections.abc import Callable

from torch.utils.data import Dataset


class TwoViews(Dataset):
    """Wraps a dataset of ``(raw_image, label)``: returns ``([t(raw), t(raw)], label)``."""

    def __init__(self, raw: Dataset, transform: Callable):
        self.raw, self.transform = raw, transform

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, i: int):
        image, label = self.raw[i]
        return [self.transform(image), self.transform(image)], label


class Transformed(Dataset):
    """``(transform(raw_image), label)``."""

    def __init__(self, raw: Dataset, transform: Callable):
        self.raw, self.transform = raw, transform

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, i: int):
        image, label = self.raw[i]
        return self.transform(image), label
