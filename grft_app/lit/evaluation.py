"""What is evaluated when, and what a record says about it (docs/PROTOCOL.md, "Evaluation").

A *view* is one split seen by one set of weights: ``test`` (the live, raw weights) and, when EMA
is on, ``test_ema`` (the EMA weights); likewise ``val``. The reference code tests the raw and the
EMA model after every epoch and reports the best epoch's top-1 of the raw one; a record therefore
keeps the per-epoch test curve, the final and the best-epoch values of every view, and which of
them the tables compare with the paper.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..record import Evaluation, Reported, reported_key
from .schedule import Protocol


@dataclass(frozen=True)
class EvalView:
    name: str  # metric prefix: val, val_ema, test, test_ema
    split: str  # val | test
    ema: bool  # evaluated with the EMA weights


def views_of(split: str, ema: bool) -> list[EvalView]:
    return [EvalView(split, split, False)] + ([EvalView(f"{split}_ema", split, True)] if ema else [])


def val_views(has_val: bool, test_every: int, ema: bool) -> list[EvalView]:
    """The views of Lightning's validation loop: the val split (if any), and the test split when
    the protocol tests during training (``test_every > 0``)."""
    return (views_of("val", ema) if has_val else []) + (views_of("test", ema) if test_every > 0 else [])


def test_views(ema: bool) -> list[EvalView]:
    return views_of("test", ema)


def with_final(curve: Iterable[dict], final: dict, final_epoch: int) -> list[dict]:
    """The curve with the final test (after training) as its last epoch's point.

    The final test and a last-epoch evaluation see the same weights; the final test is the full
    pass, so its values stand for that epoch.
    """
    points = [p for p in curve if int(p["epoch"]) != final_epoch]
    last = next((p for p in curve if int(p["epoch"]) == final_epoch), {})
    kept = {k: v for k, v in last.items() if k != "epoch" and not k.startswith("test")}  # that epoch's val
    tested = {k: float(v) for k, v in final.items() if k.startswith("test") and not k.endswith("loss")}
    if not kept and not tested:
        return sorted(points, key=lambda p: int(p["epoch"]))
    return sorted(points + [{"epoch": final_epoch, **kept, **tested}], key=lambda p: int(p["epoch"]))


def best_of(curve: list[dict]) -> dict:
    """``<metric>_best`` and ``<metric>_best_epoch`` for every metric of the curve (the earliest epoch on ties)."""
    out: dict = {}
    keys = sorted({k for p in curve for k in p if k != "epoch"})
    for key in keys:
        points = [(float(p[key]), int(p["epoch"])) for p in curve if key in p]
        value = max(v for v, _ in points)
        out[f"{key}_best"] = value
        out[f"{key}_best_epoch"] = min(e for v, e in points if v == value)
    return out


def describe(protocol: Protocol, ema: bool, total_epochs: int | None = None, split: str = "test") -> str:
    """One line: which number 'ours' is (rendered tables, dry runs); ``split="val"``: a study's trial."""
    when = "best epoch's" if protocol.report == "best" else "final"
    model = "EMA" if protocol.report_model == "ema" else ("raw (not EMA)" if ema else "raw")
    if split == "val":
        span = f"{total_epochs} epochs, " if total_epochs else ""
        return (
            f"{when} validation accuracy of the {model} model ({span}validation split evaluated after every "
            f"epoch; the test split never evaluated; protocol={protocol.name})"
        )
    if protocol.test_every == 1:
        cadence = "test split evaluated after every epoch"
    elif protocol.test_every:
        cadence = f"test split evaluated every {protocol.test_every} epochs and after the last"
    else:
        cadence = "test split evaluated after training"
    span = f"{total_epochs} epochs, " if total_epochs else ""
    return f"{when} test accuracy of the {model} model ({span}{cadence}; protocol={protocol.name})"


def evaluation_record(
    protocol: Protocol, curve: list[dict], final_epoch: int, ema: bool, metric: str = "test_acc"
) -> Evaluation:
    """The record's ``evaluation`` block (the values themselves are in ``metrics``)."""
    key = reported_key(metric, protocol.report, protocol.report_model)
    return Evaluation(
        protocol=protocol.name,
        test_every=protocol.test_every,
        final_epoch=final_epoch,
        ema=ema,
        reported=Reported(
            statistic=protocol.report,
            model=protocol.report_model,
            key=key,
            description=describe(protocol, ema, final_epoch + 1, split=metric.partition("_")[0]),
        ),
        curve=curve,
    )
