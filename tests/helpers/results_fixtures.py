"""Helpers for the results tests: stub configs for absent datasets/methods, and fixture run records.

Stubs live only in a test's temporary folder, on an extra Hydra search path; a real config in
conf/ always wins over a stub, so the same tests exercise the real configs once they exist.
"""

from __future__ import annotations

import copy
from pathlib import Path

from omegaconf import OmegaConf, open_dict

from experiments.paper.compose import Composer, run_dir
from grft_app.identity import RESULTS_VERSION
from grft_app.paths import ROOT
from grft_app.record import CodeFacts, Params, RunRecord, Timings, write_record

# Class counts of the paper's benchmarks (FGVC, VTAB-1k, GLUE): facts about the datasets.
CLASSES = {
    "cub": 200,
    "nabirds": 555,
    "oxford_flowers": 102,
    "stanford_dogs": 120,
    "stanford_cars": 196,
    "cifar100": 100,
    "caltech101": 102,
    "dtd": 47,
    "flowers102": 102,
    "pets": 37,
    "svhn": 10,
    "sun397": 397,
    "patch_camelyon": 2,
    "eurosat": 10,
    "resisc45": 45,
    "diabetic_retinopathy": 5,
    "clevr_count": 8,
    "clevr_dist": 6,
    "dmlab": 6,
    "kitti": 4,
    "dsprites_loc": 16,
    "dsprites_ori": 16,
    "smallnorb_azi": 18,
    "smallnorb_ele": 9,
    "cola": 2,
    "mrpc": 2,
    "rte": 2,
}
FAMILY = {
    **{t: "fgvc" for t in ("cub", "nabirds", "oxford_flowers", "stanford_dogs", "stanford_cars")},
    **{t: "glue" for t in ("cola", "mrpc", "rte")},
}
METHODS = ("gps", "lora", "bias", "adapter", "ssf", "vpt_shallow", "vpt_deep", "full", "linear")


def write_stubs(folder: Path) -> Path:
    """Dataset, model and method configs the other areas provide, for those not in conf/ yet."""
    for task, classes in CLASSES.items():
        if not (ROOT / "conf" / "dataset" / f"{task}.yaml").is_file():
            path = folder / "dataset" / f"{task}.yaml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"name: {task}\nfamily: {FAMILY.get(task, 'vtab')}\nnum_classes: {classes}\n")
    for name in METHODS:
        if not (ROOT / "conf" / "method" / f"{name}.yaml").is_file():
            path = folder / "method" / f"{name}.yaml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"name: {name}\n")
    if not (ROOT / "conf" / "model" / "llama32_1b.yaml").is_file():
        path = folder / "model" / "llama32_1b.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("name: meta-llama/Llama-3.2-1B\nfamily: llama\n")
    return folder


def search_path(folder: Path) -> str:
    return f"hydra.searchpath=[file://{Path(folder).resolve()}]"


def write_fixture_record(
    composer: Composer,
    runs: Path,
    args: list[str],
    acc: float,
    seed: int = 0,
    pct: float = 0.5,
    memory: list[tuple[float, int, float]] | None = None,
    finished_at: str = "2026-01-01T00:00:00",
) -> Path:
    """A finished run's record for the cell ``args`` under ``runs`` (laid out as the runner does), with a known
    accuracy."""
    cfg = copy.deepcopy(composer.config([*args, f"paths.runs={runs}"]))
    with open_dict(cfg):
        cfg.seed = seed
    folder = run_dir(cfg)
    config = OmegaConf.to_container(cfg, resolve=True)
    record = RunRecord(
        task=str(cfg.dataset.name),
        family=str(cfg.dataset.family),
        model=str(cfg.model.name),
        method=str(cfg.method.name),
        selection=str(cfg.selection.kind),
        norm=str(cfg.norm.kind),
        k=int(cfg.k),
        lambda_=float(cfg["lambda"]),
        regular_layers=config["regular_layers"],
        subsets=int(cfg.subsets),
        seed=seed,
        lr=float(cfg.lr),
        batch_size=int(cfg.batch_size),
        epochs=int(cfg.epochs),
        tags={},
        metrics={"test_acc": acc},
        params=Params(trainable=1, total=100, pct=pct),
        timings=Timings(peak_mem_mb=1234.0),
        device="fixture",
        config=config,
        code=CodeFacts(results_version=RESULTS_VERSION),
        finished_at=finished_at,
        done=True,
    )
    if memory is not None:
        folder.mkdir(parents=True, exist_ok=True)
        lines = ["t_s,step,memory_mb"] + [f"{t},{s},{m}" for t, s, m in memory]
        (folder / "memory.csv").write_text("\n".join(lines) + "\n")
        record.memory_trace = "memory.csv"
    write_record(folder, record)
    return folder
