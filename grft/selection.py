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


def chunk_rows(width: int) -> int:
    """Rows of H per float64 chunk for a matrix ``width`` columns wide (``RANK_CHUNK_ELEMENTS``)."""
    return max(1, RANK_CHUNK_ELEMENTS // max(1, width))


def _row_chunks(h: torch.Tensor) -> Iterator[torch.Tensor]:
    """``h`` in float64, a fixed number of whole rows at a time."""
    rows = chunk_rows(h.shape[1])
    for start in range(0, h.shape[0], rows):
        yield h[start : start + rows].to(torch.float64)


class Ranking:
    """Eq. 4-5 for one matrix whose ``H`` arrives a block of whole rows at a time, top to bottom.

    Why: a matrix too large for the probe's memory budget is summed a block of rows at a time
    (``grft.deferred_sums``); its ranking must be the same bits as ranking the whole ``H`` at once.
    It is, because every block starts on a chunk boundary (``chunk_rows``): the chunks are then the
    whole matrix's, a row's score comes from its own chunk, and a column's partial sums are added
    in the same row order.
    """

    def __init__(self, kind: str, k: int, shape: tuple[int, int]):
        if kind not in SELECTIONS:
            raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}; got {kind!r}")
        check_k(kind, k, tuple(shape))
        self.kind, self.k, self.shape = kind, k, tuple(shape)
        self.next_row = 0
        self._parts: list[torch.Tensor] = []  # row scores, or sparse indices, per chunk
        self._columns: torch.Tensor | None = None

    def add(self, rows: torch.Tensor) -> None:
        """The next block of ``H``'s rows (a weight-shaped block; its matrix view is used)."""
        h = as_matrix(rows)
        if h.shape[1] != self.shape[1] or self.next_row + h.shape[0] > self.shape[0]:
            raise ValueError(
                f"a block of shape {tuple(h.shape)} does not continue a {self.shape} matrix at row {self.next_row}"
            )
        if self.next_row % chunk_rows(self.shape[1]):
            raise ValueError(
                f"a block must start on a chunk boundary ({chunk_rows(self.shape[1])} rows); got row {self.next_row}"
            )
        for chunk in _row_chunks(h):
            if self.kind == "row":
                self._parts.append(chunk.square_().sum(dim=1))
            elif self.kind == "column":
                part = chunk.square_().sum(dim=0)
                self._columns = part if self._columns is None else self._columns.add_(part)
            else:
                self._parts.append(chunk.abs_().topk(self.k, dim=1).indices)
        self.next_row += h.shape[0]

    def indices(self) -> torch.Tensor:
        """The chosen indices, once every row has been added."""
        if self.next_row != self.shape[0]:
            raise ValueError(f"the ranking got {self.next_row} of the matrix's {self.shape[0]} rows")
        if self.kind == "row":
            return torch.cat(self._parts).topk(self.k).indices.sort().values
        if self.kind == "column":
            return self._columns.topk(self.k).indices.sort().values
        return torch.cat(self._parts).sort(dim=1).values


def rank(grad: torch.Tensor, kind: str, k: int) -> torch.Tensor:
    """Indices to train for one matrix, from its accumulated probe gradient ``H``.

    row: the k rows with the largest ``S_i = sum_j H_ij^2`` (Eq. 4), sorted ascending, ``[k]``;
    column: the same over columns, ``[k]``; sparse (GPS): per row the k largest ``|H_ij|``, ``[out, k]``.
    The squares are taken in float64 (exact for float32 ``H``), on ``RANK_CHUNK_ELEMENTS`` of
    ``H`` at a time; a column's sum adds the chunks' partial sums in row order.
    """
    ranking = Ranking(kind, k, tuple(as_matrix(grad).shape))
    ranking.add(grad)
    return ranking.indices()


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
