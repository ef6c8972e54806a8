"""What a dataset builder hands the app, and what the model tells the builder it eats."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch.utils.data import Dataset


@dataclass(frozen=True)
class InputSpec:
    """The model's input contract.

    kind: ``image`` (tensors ``[3, img_size, img_size]`` normalised with mean/std) or ``text``
    (token ids from ``tokenizer``, at most ``max_length`` long).
    """

    kind: str = "image"
    img_size: int = 224
    in_chans: int = 3
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    interpolation: str = "bicubic"
    crop_pct: float | None = None  # the model's pretrained centre-crop share (timm); None: the task's own
    tokenizer: Any = None
    max_length: int = 256
    processor: Any = None  # a transformers image processor, where the model came with one (``export`` saves it)


@dataclass
class DataSplits:
    """The datasets of one task.

    train: training items ``(input, label)`` with the training transform.
    probe: the training images as the gradient probe sees them: ``([view1, view2], label)`` for
        images (two augmented views, for the SCL loss), plain items for text.
    val: optional validation split; test: the split the paper reports.
    collate_fn: for text, pads a list of items into ``{"input_ids", "attention_mask", "labels"}``.
    metrics: what to report beside accuracy (``mcc`` for CoLA, ``f1`` for MRPC).
    class_names: the name of each class id, where the data names them (your own images and texts).
    split_listing: which items went to which split, where the run chose them (a held-out fraction);
        the runner writes it into the run directory (``data_split.json``).
    """

    train: Dataset
    probe: Dataset
    test: Dataset
    num_classes: int
    val: Dataset | None = None
    collate_fn: Callable | None = None
    metrics: tuple[str, ...] = field(default_factory=lambda: ("acc",))
    class_names: tuple[str, ...] | None = None
    split_listing: dict | None = None
