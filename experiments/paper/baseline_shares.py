"""Trainable share of a baseline row: what its recipe trains, counted on the task's model on the meta device.

The paper's tables print one Params column per row: the mean over the benchmark's tasks of each
task's trainable share (Table 1's GRFT 1.22 is the mean of Table 8's five FGVC shares). A baseline
cell is composed exactly as its run would be (method options from ``conf/recipe/``), its method
prepares the model without weights, and the method's own ``param_report`` counts what would train:
the number a finished run records. No memory, no download.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

from omegaconf import DictConfig

from grft.report import ParamReport

from .compose import Composer
from .hparams import meta_model
from .spec import Row, Target


def cell_report(cfg: DictConfig) -> ParamReport:
    """Trainable / total parameters of one composed cell, as its run's method would count them."""
    from grft_app.methods import make_method
    from grft_app.models import ModelBundle
    from grft_app.run.settings import method_settings

    model, arch = meta_model(cfg.model, int(cfg.dataset.num_classes))
    model = copy.deepcopy(model)  # the cached meta model stays untouched by the method
    method = make_method(method_settings(cfg))
    trained = method.prepare(ModelBundle(model, arch, None))
    return method.param_report(trained)


@dataclass
class RowShare:
    """A row's per-task shares (%), their mean, and what its recipe says about them."""

    label: str
    shares: dict[str, float] = field(default_factory=dict)
    comparable: bool | None = None
    share_differs: str = ""

    @property
    def mean(self) -> float:
        return sum(self.shares.values()) / len(self.shares) if self.shares else math.nan


def row_share(target: Target, row: Row, composer: Composer) -> RowShare:
    """Every task's share for one table row, and the recipe's ``comparable`` and ``share_differs``."""
    out = RowShare(row.label)
    for task in target.tasks:
        cfg = composer.config(target.cell(row, task).args)
        out.shares[task] = cell_report(cfg).percent
        recipe = cfg.get("recipe") or {}
        out.comparable = recipe.get("comparable")
        out.share_differs = str(recipe.get("share_differs") or "")
    return out


BASELINES = ("full", "linear", "bias", "adapter", "lora", "vpt_shallow", "vpt_deep", "ssf")


def shares_table(spec, composer: Composer) -> str:
    """Markdown: every baseline row of Tables 1-3, the paper's Params and ours (mean over the tasks)."""
    import pandas as pd

    from .paper import load_paper_table

    lines = []
    for name in ("table1", "table2", "table3"):
        target = spec.target(name)
        paper = load_paper_table(target.paper, spec.paper_dir)
        for row in target.rows:
            if str(row.overrides.get("method")) not in BASELINES:
                continue
            share = row_share(target, row, composer)
            printed = paper.loc[row.label, "params"]
            digits = len(printed.split(".")[1])
            lines.append(
                {
                    "Table": target.caption.split(":")[0],
                    "Row": row.label,
                    "recipe": row.overrides.get("recipe", ""),
                    "paper (%)": printed,
                    "ours (%)": f"{share.mean:.3f}",
                    "rounds to paper": "yes" if round(share.mean, digits) == float(printed) else "no",
                    "comparable": {True: "yes", False: "no"}.get(share.comparable, "—"),
                }
            )
    return pd.DataFrame(lines).to_markdown(index=False, disable_numparse=True)


if __name__ == "__main__":  # python -m experiments.paper.baseline_shares
    from .spec import load_spec

    print(shares_table(load_spec(), Composer()))
