"""The metrics the paper reports: accuracy, plus MCC (CoLA) and F1 of the positive class (MRPC)."""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics.classification import BinaryF1Score, MulticlassAccuracy, MulticlassMatthewsCorrCoef

KNOWN = ("acc", "mcc", "f1")


class TaskMetrics(nn.Module):
    def __init__(self, num_classes: int, names: tuple[str, ...] = ("acc",)):
        super().__init__()
        unknown = sorted(set(names) - set(KNOWN))
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; known: {', '.join(KNOWN)}")
        if "f1" in names and num_classes != 2:
            raise ValueError(
                f"metric f1 is the positive-class F1 of a binary task; this task has {num_classes} classes"
            )
        makers = {
            "acc": lambda: MulticlassAccuracy(num_classes, average="micro"),
            "mcc": lambda: MulticlassMatthewsCorrCoef(num_classes),
            "f1": lambda: BinaryF1Score(),
        }
        self.items = nn.ModuleDict({n: makers[n]() for n in dict.fromkeys(("acc", *names))})

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        preds = logits.argmax(dim=-1)
        for metric in self.items.values():
            metric.update(preds, labels)

    def compute(self) -> dict[str, torch.Tensor]:
        return {name: metric.compute() for name, metric in self.items.items()}

    def reset(self) -> None:
        for metric in self.items.values():
            metric.reset()
