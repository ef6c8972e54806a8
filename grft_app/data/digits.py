"""The embedded default task: scikit-learn's bundled 8x8 digits, split for a transfer experiment.

Source task: classify digits ``source_classes`` (a small ViT is pre-trained on it and cached).
Target task: the other digits, with only ``train_per_class`` labelled images per class; the rest
are the test set. ``val_fraction`` holds a seeded, stratified part of those training images out as
a validation split (choosing settings without the test set: ``make tune``). Nothing is downloaded:
the images ship inside scikit-learn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset, TensorDataset

from .holdout import holdout_of, split_off
from .images import require_images
from .splits import DataSplits, InputSpec
from .views import Transformed, TwoViews

INPUT_KIND = "image"


def digit_tensors(classes: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``[n, 1, 8, 8]`` in [0, 1] and labels re-indexed to ``0..len(classes)-1``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    targets = torch.tensor(digits.target)
    keep = torch.isin(targets, torch.tensor(list(classes)))
    remap = {c: i for i, c in enumerate(classes)}
    labels = torch.tensor([remap[int(t)] for t in targets[keep]])
    return images[keep], labels


def split_per_class(labels: torch.Tensor, per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of ``per_class`` random items of each class, and of all the others."""
    g = torch.Generator().manual_seed(seed)
    train = []
    for c in labels.unique().tolist():
        idx = (labels == c).nonzero().flatten()
        train.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    train = torch.cat(train).sort().values
    rest = torch.ones(len(labels), dtype=torch.bool)
    rest[train] = False
    return train, rest.nonzero().flatten()


class _Normalise:
    """Jitter (training), then the model's input: the grey channel repeated to its channel count (a
    timm or transformers model pre-trained on RGB), resized to its size, normalised with its mean/std."""

    def __init__(self, inputs: InputSpec, augment: bool):
        self.channels = int(inputs.in_chans)
        self.mean = torch.tensor(inputs.mean[: self.channels]).view(-1, 1, 1)
        self.std = torch.tensor(inputs.std[: self.channels]).view(-1, 1, 1)
        self.size = inputs.img_size
        self.augment = augment

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if self.augment:  # a random shift of up to one pixel, the digits' natural jitter
            padded = torch.nn.functional.pad(image, (1, 1, 1, 1))
            dy, dx = torch.randint(0, 3, (2,)).tolist()
            image = padded[:, dy : dy + 8, dx : dx + 8]
        if self.size != image.shape[-1]:
            image = torch.nn.functional.interpolate(image[None], size=self.size, mode="nearest")[0]
        if self.channels != image.shape[0]:
            image = image.expand(self.channels, -1, -1)
        return (image - self.mean) / self.std


def build(cfg: Mapping, data_dir: Path, inputs: InputSpec) -> DataSplits:
    require_images(cfg, inputs)
    classes = list(cfg.get("target_classes", range(10)))
    images, labels = digit_tensors(classes)
    train_idx, test_idx = split_per_class(labels, int(cfg.get("train_per_class", 40)), int(cfg.get("split_seed", 0)))
    raw_train = TensorDataset(images[train_idx], labels[train_idx])
    raw_test = TensorDataset(images[test_idx], labels[test_idx])
    raw_val, holdout = None, None
    if holdout_of(cfg) is not None:
        raw_train, raw_val, holdout = split_off(raw_train, labels[train_idx].tolist(), *holdout_of(cfg))
    train_tf, eval_tf = _Normalise(inputs, augment=True), _Normalise(inputs, augment=False)
    return DataSplits(
        train=Transformed(raw_train, train_tf),
        probe=TwoViews(raw_train, train_tf),
        test=Transformed(raw_test, eval_tf),
        val=Transformed(raw_val, eval_tf) if raw_val is not None else None,
        num_classes=len(classes),
        split_listing=holdout,  # which training images were held out as validation
        class_names=tuple(str(c) for c in classes),  # class id i is the digit classes[i]
    )


def source_dataset(cfg: Mapping, inputs: InputSpec) -> Dataset:
    """The pre-training task: every image of ``source_classes``, augmented."""
    images, labels = digit_tensors(list(cfg["source_classes"]))
    return Transformed(TensorDataset(images, labels), _Normalise(inputs, augment=True))


def label_names(cfg: Mapping) -> list[str]:
    """The digits the task's classes are (class ``i`` is digit ``target_classes[i]``)."""
    return [str(c) for c in cfg.get("target_classes", range(10))]


def eval_transform(cfg: Mapping, inputs: InputSpec):
    """PIL image -> model input as the test split is fed: grey, 8x8 (area-averaged), in [0, 1], then normalised."""
    from torchvision import transforms as T

    return T.Compose([T.Grayscale(), T.Resize((8, 8), antialias=True), T.ToTensor(), _Normalise(inputs, augment=False)])
