"""A tiny image folder to try ``dataset=images`` on: scikit-learn's bundled 8x8 digits as PNG files.

    python -m data_prep.example_images DIR [--classes 3] [--train 20] [--test 10] [--size 32]

writes ``DIR/train/<class>/*.png`` and ``DIR/test/<class>/*.png`` (the ImageFolder layout), one
class per digit, named in words (``zero``, ``one``, ...): the first ``--classes`` digits, ``--train``
and ``--test`` images of each (different images), greyscale, enlarged to ``--size`` pixels. Nothing
is downloaded (the digits ship inside scikit-learn); the same arguments write the same files.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def write_example_images(root: Path, classes: int = 3, train: int = 20, test: int = 10, size: int = 32) -> Path:
    """The folder described in the module docstring; returns ``root``."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for digit in range(classes):
        indices = np.flatnonzero(digits.target == digit)[: train + test]  # in the dataset's own order
        for n, index in enumerate(indices):
            split = "train" if n < train else "test"
            pixels = (digits.images[index] * (255 / 16)).round().astype(np.uint8)  # 0..16 -> 0..255
            image = Image.fromarray(pixels, mode="L").resize((size, size), Image.Resampling.NEAREST)
            path = root / split / NAMES[digit] / f"{NAMES[digit]}_{n:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            image.save(path)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_prep.example_images", description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="the folder to write (train/ and test/ inside it)")
    parser.add_argument("--classes", type=int, default=3, help="how many digits, from zero (2-10; default 3)")
    parser.add_argument("--train", type=int, default=20, help="training images per class (default 20)")
    parser.add_argument("--test", type=int, default=10, help="test images per class (default 10)")
    parser.add_argument("--size", type=int, default=32, help="side of each image in pixels (default 32)")
    args = parser.parse_args(argv)
    problems = [
        f"--classes must be 2..10, got {args.classes}" if not 2 <= args.classes <= 10 else "",
        f"--train and --test must be >= 1 and together <= 170, got {args.train} and {args.test}"
        if min(args.train, args.test) < 1 or args.train + args.test > 170  # the rarest digit has 174 images
        else "",
        f"--size must be >= 8, got {args.size}" if args.size < 8 else "",
    ]
    if any(problems):
        print(f"error: {next(p for p in problems if p)}", file=sys.stderr)
        return 2
    if args.root.exists() and any(args.root.iterdir()):
        print(f"error: {args.root} already exists and is not empty; give a new folder", file=sys.stderr)
        return 2
    write_example_images(args.root, args.classes, args.train, args.test, args.size)
    total = args.classes * (args.train + args.test)
    print(f"wrote {total} images of {args.classes} classes to {args.root}/train and {args.root}/test")
    return 0


if __name__ == "__main__":
    sys.exit(main())
