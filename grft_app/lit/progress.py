"""A rich progress bar for the probe, shown on the main process only."""

from __future__ import annotations

from collections.abc import Iterable


def rich_progress(enabled: bool = True):
    def wrap(iterable: Iterable, description: str, total: int | None = None) -> Iterable:
        from lightning.fabric.utilities.rank_zero import rank_zero_only

        if not enabled or rank_zero_only.rank != 0:
            return iterable
        from rich.progress import track

        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)
        return track(iterable, description=description, total=total, transient=True)

    return wrap


def training_progress_bar():
    """Lightning's rich bar without ``v_num`` (the logger's version number, meaningless to a reader)."""
    from lightning.pytorch.callbacks import RichProgressBar

    class Bar(RichProgressBar):
        def get_metrics(self, trainer, pl_module):
            items = super().get_metrics(trainer, pl_module)
            items.pop("v_num", None)
            return items

    return Bar()
