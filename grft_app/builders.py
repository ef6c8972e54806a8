"""Which module builds a model or dataset family, as the YAML says it (``builder:``), read in one place.

Each file of ``conf/model/`` and ``conf/dataset/`` names its family (``family: vit``) and the module
that builds it (``builder: grft_app.models.vit``). A config made by hand, or a record written
before the YAML named its module, carries only ``family``; its module is the one the conf folder
gives that family. So a new family is its module plus its YAML, and no list of modules is kept by
hand. (``builder`` is not a setting of the run: ``grft_app.identity`` leaves it out of run keys.)
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from functools import cache
from types import ModuleType

from omegaconf import OmegaConf

from .paths import CONF_DIR

BUILDER = "builder"


@cache
def family_builders(group: str) -> dict[str, str]:
    """Family -> module of ``conf/<group>/*.yaml`` (a ``# @package _global_`` file: its ``<group>:`` node).

    Two files that give one family two modules are an error naming both."""
    found: dict[str, tuple[str, str]] = {}
    for path in sorted((CONF_DIR / group).glob("*.yaml")):
        node = OmegaConf.load(path)
        node = node.get(group, node) if group in node else node
        family, builder = node.get("family"), node.get(BUILDER)
        if family is None or builder is None:
            raise ValueError(f"{path} must name its family and the module that builds it (`{BUILDER}:`)")
        if family in found and found[family][0] != builder:
            raise ValueError(
                f"{path} builds family {family} with {builder}, but {found[family][1]} with {found[family][0]}"
            )
        found[str(family)] = (str(builder), path.name)
    return {family: builder for family, (builder, _) in found.items()}


def family_module(group: str, cfg: Mapping) -> ModuleType:
    """The module that builds ``cfg``: its own ``builder``, else its family's in ``conf/<group>``."""
    builder = cfg.get(BUILDER) or family_builders(group).get(str(cfg.get("family")))
    if builder is None:
        known = ", ".join(sorted(family_builders(group)))
        raise ValueError(f"{group} family {cfg.get('family')!r} is unknown; known: {known}")
    return importlib.import_module(str(builder))
