"""Ranking rows, columns or entries by the probe gradient (Eq. 4-5), and the index-only record.

A ``Selection`` holds, per eligible matrix, only the chosen indices and the matrix shape: ``[k]``
for rows and columns, ``[out, k]`` for sparse. It is what a checkpoint and an adapter carry.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import SELECTIONS
from .io import load_tensors, read_metadata, save_tensors, write_json_atomic


def as_matrix(weight: torch.Tensor) -> torch.Tensor:
    """View a Linear ``[out, in]`` or Conv2d ``[out, in, kh, kw]`` weight as ``[out, in*kh*kw]``."""
    return weight.reshape(weight.shape[0], -1)


def compact_index(index: torch.Tensor, side: int) -> torch.Tensor:
    """Indices in the smallest integer type that holds ``side`` (files store int16 where they can)."""
    dtype = torch.int16 if side <= torch.iinfo(torch.int16).max else torch.int32
    return index.detach().to(device="cpu", dtype=dtype).contiguous()


def check_k(kind: str, k: int, shape: tuple[int, int], name: str = "matrix") -> None:
    side = shape[0] if kind == "row" else shape[1]
    what = "rows" if kind == "row" else "columns"
    if kind == "sparse":
        what = "entries per row (its columns)"
    if k > side:
        raise ValueError(f"k={k} is larger than the {side} {what} of {name} {tuple(shape)}; allowed: 1..{side}")


# Rows of H converted to float64 at a time while ranking: a fixed count, so the scores depend only
# on the matrix's shape (the same bits whether the probe took one pass or many), and the ranking's
# transient memory stays a few MB instead of a float64 copy of the largest matrix (Llama-3.2-1B's
# MLP: 134 MB, twice its float32 sum).
RANK_CHUNK_ELEMENTS = 1 << 20


def _row_chunks(h: torch.Tensor) -> Iterator[torch.Tensor]:
    """``h`` in float64, a fixed number of whole rows at a time."""
    rows = max(1, RANK_CHUNK_ELEMENTS // max(1, h.shape[1]))
    for start in range(0, h.shape[0], rows):
        yield h[start : start + rows].to(torch.float64)


def rank(grad: torch.Tensor, kind: str, k: int) -> torch.Tensor:
    """Indices to train for one matrix, from its accumulated probe gradient ``H``.

    row: the k rows with the largest ``S_i = sum_j H_ij^2`` (Eq. 4), sorted ascending, ``[k]``;
    column: the same over columns, ``[k]``; sparse (GPS): per row the k largest ``|H_ij|``, ``[out, k]``.
    The squares are taken in float64 (exact for float32 ``H``), on ``RANK_CHUNK_ELEMENTS`` of
    ``H`` at a time; a column's sum adds the chunks' partial sums in row order.
    """
    h = as_matrix(grad)
    check_k(kind, k, tuple(h.shape))
    if kind == "row":
        scores = torch.cat([chunk.square_().sum(dim=1) for chunk in _row_chunks(h)])
        return scores.topk(k).indices.sort().values
    if kind == "column":
        scores = None
        for chunk in _row_chunks(h):
            part = chunk.square_().sum(dim=0)
            scores = part if scores is None else scores.add_(part)
        return scores.topk(k).indices.sort().values
    if kind == "sparse":
        return torch.cat([chunk.abs_().topk(k, dim=1).indices for chunk in _row_chunks(h)]).sort(dim=1).values
    raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}; got {kind!r}")


@dataclass
class LayerSelection:
    """Chosen indices of one matrix; ``shape`` is its ``[out, in*kh*kw]`` matrix shape."""

    index: torch.Tensor
    shape: tuple[int, int]

    def slice_numel(self, kind: str) -> int:
        out, inp = self.shape
        k = self.index.shape[-1]
        return {"row": k * inp, "column": out * k, "sparse": out * k}[kind]


class Selection:
    """The chosen slices of every eligible matrix, by module name."""

    def __init__(self, kind: str, k: int, layers: dict[str, LayerSelection]):
        if kind not in SELECTIONS:
            raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}; got {kind!r}")
        self.kind = kind
        self.k = k
        self.layers = dict(layers)

    def __getitem__(self, name: str) -> LayerSelection:
        return self.layers[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Selection):
            return NotImplemented
        return (
            self.kind == other.kind
            and self.k == other.k
            and self.layers.keys() == other.layers.keys()
            and all(
                self.layers[n].shape == other.layers[n].shape
                and torch.equal(self.layers[n].index.cpu(), other.layers[n].index.cpu())
                for n in self.layers
            )
        )

    def __repr__(self) -> str:
        return f"Selection(kind={self.kind!r}, k={self.k}, layers={len(self.layers)})"

    def slice_numel(self) -> int:
        """Weight entries the selection trains (biases and head not included)."""
        return sum(layer.slice_numel(self.kind) for layer in self.layers.values())

    def _metadata(self) -> dict:
        return {
            "format": "grft-selection",
            "kind": self.kind,
            "k": self.k,
            "shapes": {n: list(layer.shape) for n, layer in self.layers.items()},
        }

    def save(self, path: str | Path) -> Path:
        """Write the indices to ``.safetensors`` (default) or ``.json``; returns the path."""
        meta = self._metadata()
        if Path(path).suffix == ".json":
            meta["index"] = {n: layer.index.cpu().tolist() for n, layer in self.layers.items()}
            return write_json_atomic(path, meta)
        tensors = {n: compact_index(layer.index, max(layer.shape)) for n, layer in self.layers.items()}
        return save_tensors(path, tensors, meta)

    @classmethod
    def load(cls, path: str | Path) -> Selection:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no selection file at {path}")
        if path.suffix == ".json":
            meta = json.loads(path.read_text())
            indices = {n: torch.tensor(v, dtype=torch.long) for n, v in meta["index"].items()}
        else:
            meta = read_metadata(path, what="GRFT selection file")
            indices = load_tensors(path)
        if meta.get("format") != "grft-selection":
            raise ValueError(f"{path} is not a GRFT selection file (format={meta.get('format')!r})")
        layers = {n: LayerSelection(indices[n].long(), tuple(s)) for n, s in meta["shapes"].items()}
        return cls(meta["kind"], int(meta["k"]), layers)
