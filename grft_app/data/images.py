"""What the image families share: a dataset of (file, label) items and the protocol's transforms.

Transforms (torchvision, on PIL images), selected by name from the dataset config:
- ``resize``: direct resize to ``img_size x img_size`` (VTAB-1k reference protocol, no augmentation);
- ``crop_flip``: RandomResizedCrop + horizontal flip (FGVC reference training);
- ``resize_crop``: resize the short side to ``floor(img_size / crop_pct)``, center crop (FGVC
  reference evaluation: crop_pct 0.9 gives 248 -> 224);
- ``contrast``: the probe's views (crop, flip, colour jitter, greyscale), as in the contrastive
  augmentation of the reference code's gradient probe.
All end with ToTensor + Normalize(mean, std) of the model's ``InputSpec``. Resizing uses the model's
interpolation, except that the dataset's ``transform.augment_interpolation`` may set the random
crops' (training crops and probe views): ``random`` picks bilinear or bicubic per crop, as timm's
``interpolation="random"`` does in the reference code's FGVC training and probe loaders.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from torch.utils.data import Dataset

from .catalog import missing
from .splits import DataSplits, InputSpec
from .views import Transformed, TwoViews

TRANSFORMS = ("resize", "crop_flip", "resize_crop", "contrast")


class CorruptImageError(ValueError):
    """An image file exists but cannot be decoded; the message names the file."""


class ImageItems(Dataset):
    """``(PIL RGB image, label)`` for a list of ``(relative path, label)`` under ``root``."""

    def __init__(self, root: Path, items: Sequence[tuple[str, int]]):
        self.root = Path(root)
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def labels(self) -> list[int]:
        return [label for _, label in self.items]

    def path(self, i: int) -> Path:
        return self.root / self.items[i][0]

    def __getitem__(self, i: int):
        return load_rgb(self.path(i)), self.items[i][1]


def load_rgb(path: Path):
    """Decode an image fully (PIL is lazy) so a corrupt file fails here, named, not in a worker."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            if image.mode == "P" and "transparency" in image.info:
                image = image.convert("RGBA")  # PIL's route for a palette with transparency
            return image.convert("RGB")  # greyscale, palette, RGBA, CMYK...: RGB, as the models expect
    except FileNotFoundError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise CorruptImageError(
            f"cannot read image {path}: {err.__class__.__name__}: {err}. "
            "Replace the file (re-run the data_prep command of its family)"
        ) from err


def check_files_exist(dataset: ImageItems, task: str, family: str, data_dir: Path, folder: Path, split: str) -> None:
    """Listed images that are absent: the folder is incomplete (an error naming the first few)."""
    absent = [str(dataset.items[i][0]) for i in range(len(dataset)) if not dataset.path(i).is_file()]
    if absent:
        shown = ", ".join(absent[:3]) + (f" and {len(absent) - 3} more" if len(absent) > 3 else "")
        raise missing(
            task, family, data_dir, folder, f"{len(absent)} image(s) listed in the {split} split are absent ({shown})"
        )


def check_labels(labels: Sequence[int], num_classes: int, where: str) -> None:
    bad = sorted({label for label in labels if not 0 <= label < num_classes})
    if bad:
        raise ValueError(
            f"{where}: labels {bad[:5]} are outside 0..{num_classes - 1}; "
            f"dataset.num_classes={num_classes} does not match these files"
        )


def random_crop(size: int, interpolation: str) -> Callable:
    """RandomResizedCrop; ``random``: timm's, bilinear or bicubic drawn per crop (the reference's FGVC crops)."""
    from torchvision import transforms as T

    if interpolation == "random":
        from timm.data.transforms import RandomResizedCropAndInterpolation

        return RandomResizedCropAndInterpolation(size, interpolation="random")
    return T.RandomResizedCrop(size, interpolation=T.InterpolationMode(interpolation))


def make_transform(
    kind: str, inputs: InputSpec, crop_pct: float = 0.9, crop_interpolation: str | None = None
) -> Callable:
    """``crop_interpolation``: the random crops' interpolation (None: the model's; ``random``: per crop)."""
    from torchvision import transforms as T

    size = inputs.img_size
    interpolation = T.InterpolationMode(inputs.interpolation)
    crop_mode = crop_interpolation or inputs.interpolation
    if crop_mode != "random" and crop_mode not in {m.value for m in T.InterpolationMode}:
        raise ValueError(
            f"dataset.transform.augment_interpolation={crop_mode!r} is unknown; use random, bilinear, bicubic or null"
        )
    tail = [T.ToTensor(), T.Normalize(inputs.mean, inputs.std)]
    if kind == "resize":
        head = [T.Resize((size, size), interpolation=interpolation)]
    elif kind == "crop_flip":
        head = [random_crop(size, crop_mode), T.RandomHorizontalFlip()]
    elif kind == "resize_crop":
        if not 0 < crop_pct <= 1:
            raise ValueError(f"dataset.transform.crop_pct must be in (0, 1]; got {crop_pct}")
        head = [T.Resize(math.floor(size / crop_pct), interpolation=interpolation), T.CenterCrop(size)]
    elif kind == "contrast":
        head = [
            random_crop(size, crop_mode),
            T.RandomHorizontalFlip(),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
        ]
    else:
        raise ValueError(f"dataset.transform: {kind!r} is unknown; known: {', '.join(TRANSFORMS)}")
    return T.Compose(head + tail)


def require_images(cfg: Mapping, inputs: InputSpec) -> None:
    if inputs.kind != "image":
        raise ValueError(
            f"dataset {cfg.get('name')} is an image task but the model takes {inputs.kind!r} inputs; "
            "choose an image model (e.g. model=vit_b16_in21k)"
        )


def transform_options(cfg: Mapping, defaults: Mapping[str, object] = ()) -> dict:
    """The transform names of ``cfg["transform"]``, each falling back to the family's ``defaults``."""
    return {**dict(defaults), **dict(cfg.get("transform") or {})}


def crop_share(options: Mapping, inputs: InputSpec) -> float:
    """``transform.crop_pct``; null: the model's own pretrained crop share (timm's crop_pct), else FGVC's 0.9."""
    crop_pct = options.get("crop_pct")
    return float(crop_pct if crop_pct is not None else inputs.crop_pct or 0.9)


def task_transform(role: str, cfg: Mapping, inputs: InputSpec, defaults: Mapping[str, object] = ()) -> Callable:
    """The task's ``train``, ``eval`` or ``probe`` transform as ``cfg["transform"]`` names it (else ``defaults``);
    what a run's predictions go through too (``eval``)."""
    options = transform_options(cfg, defaults)
    kind = options.get("probe", "contrast") if role == "probe" else options[role]
    # the random crops' interpolation (training and probe; None: the model's; ``random``: drawn per crop)
    crops = None if role == "eval" else options.get("augment_interpolation")
    return make_transform(str(kind), inputs, crop_share(options, inputs), crops)


def eval_crop(cfg: Mapping, inputs: InputSpec, defaults: Mapping[str, object] = ()) -> dict:
    """The evaluation transform in timm's data-config terms (``crop_pct``, ``crop_mode``), for an exported
    model's config; ``{}`` for a transform timm has no words for."""
    options = transform_options(cfg, defaults)
    kind = str(options["eval"])
    if kind == "resize":
        return {"crop_pct": 1.0, "crop_mode": "squash"}
    if kind == "resize_crop":
        return {"crop_pct": crop_share(options, inputs), "crop_mode": "center"}
    return {}


def image_splits(
    cfg: Mapping,
    inputs: InputSpec,
    train: ImageItems,
    test: ImageItems,
    val: ImageItems | None = None,
    defaults: Mapping[str, object] = (),
) -> DataSplits:
    """Wrap raw splits with the transforms named in ``cfg["transform"]`` (falling back to ``defaults``)."""
    train_tf = task_transform("train", cfg, inputs, defaults)
    eval_tf = task_transform("eval", cfg, inputs, defaults)
    probe_kind = str(transform_options(cfg, defaults).get("probe", "contrast"))
    probe_tf = train_tf if probe_kind == "train" else task_transform("probe", cfg, inputs, defaults)
    num_classes = int(cfg["num_classes"])
    return DataSplits(
        train=Transformed(train, train_tf),
        probe=TwoViews(train, probe_tf),
        test=Transformed(test, eval_tf),
        val=Transformed(val, eval_tf) if val is not None else None,
        num_classes=num_classes,
        metrics=tuple(cfg.get("metrics") or ("acc",)),
    )
