"""Run the cycle over a list of models, one verdict each, with a time limit per model.

Each model runs in this process under ``SIGALRM``; a model that takes longer is ``failed`` with
``timeout``. Verdicts are appended to a JSON-lines log as they come, so a long sweep that stops
keeps what it did.
"""

from __future__ import annotations

import gc
import json
import signal
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from . import hf_zoo, timm_zoo
from .cycle import Verdict, one_line, verdict


@dataclass(frozen=True)
class Row:
    library: str  # timm | transformers
    family: str  # timm module, or transformers class
    model: str  # what was built
    status: str
    reason: str
    seconds: float


class Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise Timeout


def timm_models(families: Iterable[str] | None = None, cache: Path | None = None) -> list[tuple[str, str, Callable]]:
    """One entry per family; its smallest variant is looked up when its turn comes (and cached)."""
    families = families or timm_zoo.families()
    return [("timm", f, "", lambda f=f: timm_zoo.build(timm_zoo.smallest(f, cache))) for f in families]


def hf_models(classes: Iterable[str] | None = None) -> list[tuple[str, str, Callable]]:
    return [("transformers", c, c, lambda c=c: hf_zoo.build(c)) for c in (classes or hf_zoo.class_names())]


def run_one(library: str, family: str, model_name: str, builder: Callable | None, timeout: int) -> Row:
    start = time.perf_counter()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(timeout)
    try:
        if builder is None:
            result = Verdict("unbuildable", "no variant builds")
        else:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model, batch = builder()
                model_name = model_name or getattr(model, "default_cfg", {}).get("architecture", "")
            except Timeout:
                raise
            except Exception as err:  # noqa: BLE001 - a model this library cannot build is not counted
                result = Verdict("unbuildable", one_line(err))
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    result = verdict(model, batch)
    except Timeout:
        result = Verdict("failed", f"timeout after {timeout} s")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        gc.collect()
    return Row(library, family, model_name, result.status, result.reason, round(time.perf_counter() - start, 1))


def sweep(models, timeout: int, log: Path | None = None, echo: bool = True) -> list[Row]:
    torch.set_num_threads(1)
    rows = []
    for library, family, name, builder in models:
        row = run_one(library, family, name, builder, timeout)
        rows.append(row)
        if log is not None:
            with log.open("a") as f:
                f.write(json.dumps(asdict(row)) + "\n")
        if echo:
            print(f"{row.library:12} {row.family:40} {row.status:11} {row.seconds:6.1f}s {row.reason}", flush=True)
    return rows


def read_log(path: Path) -> list[Row]:
    return [Row(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
