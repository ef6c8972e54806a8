"""Compose the configuration a cell will run with, exactly as ``python run.py <overrides>`` would.

Composing is slow (a Hydra defaults-tree walk, ~0.1 s), and the paper has hundreds of cells that
differ only in plain values (``k=5``). So the config-group part of the overrides (``experiment``,
``method``, ``selection``, ...) is composed once and cached, and the plain values are applied to a
copy the way Hydra applies command-line overrides after composition.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Iterable, Sequence

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from grft_app.paths import CONF_DIR



class ConfigUnavailable(LookupError):
    """A cell's configuration cannot be composed (e.g. its dataset or method config is not there yet)."""


def _search_dirs(overrides: Sequence[str], conf_dir: Path) -> list[Path]:
    dirs = [conf_dir]
    for item in overrides:
        if item.startswith("hydra.searchpath="):
            for entry in item.split("=", 1)[1].strip("[]").split(","):
                entry = entry.strip()
                if entry.startswith("file://"):
                    dirs.append(Path(entry[len("file://"):]))
    return dirs


class Composer:
    """Composes cells' configs under one config directory, plus ``extra`` overrides for every cell.

    ``extra`` is what a make target passes along to every run (``debug=smoke``, ``paths.runs=...``,
    ``hydra.searchpath=[file:///dir]``), so the render half composes what the run half ran.
    """

    def __init__(self, extra: Iterable[str] = (), conf_dir: Path = CONF_DIR):
        from grft_app.lit.settings import register_resolvers

        register_resolvers()
        self.conf_dir = Path(conf_dir).resolve()
        self.extra = [str(o) for o in extra]
        self.groups = {p.name for d in _search_dirs(self.extra, self.conf_dir) if d.is_dir() for p in d.iterdir() if p.is_dir()}
        self._parser = OverridesParser.create()
        self._dirs = _search_dirs(self.extra, self.conf_dir)
        self._composed: dict[tuple[str, ...], DictConfig | ConfigUnavailable] = {}
        self._choices: dict[tuple[str, ...], dict] = {}
        self._options: dict[Path, dict] = {}

    def is_group(self, override: str) -> bool:
        key = override.split("=", 1)[0].lstrip("+~")
        return "/" in key or key in self.groups or key.startswith("hydra.")

    def config(self, overrides: Sequence[str]) -> DictConfig:
        """The composed config of ``overrides`` + ``extra``; raises ``ConfigUnavailable`` with Hydra's reason."""
        items = [*overrides, *self.extra]
        groups = [o for o in items if self.is_group(o)]
        values = [o for o in items if not self.is_group(o)]
        cfg = self._grouped(groups)
        try:
            for override in self._parser.parse_overrides(values):
                key = override.key_or_group
                if override.is_delete():
                    with open_dict(cfg):
                        parent, _, leaf = key.rpartition(".")
                        (OmegaConf.select(cfg, parent) if parent else cfg).pop(leaf)
                    continue
                OmegaConf.update(cfg, key, override.value(), merge=True, force_add=override.is_add())
        except (HydraException, OmegaConfBaseException) as err:
            raise ConfigUnavailable(f"overrides {values}: {err}") from None
        return cfg

    def _grouped(self, groups: list[str]) -> DictConfig:
        """Compose the group overrides, swapping simple options into a cached base where that is exact.

        A plain option file (no defaults list, no ``@package``) only fills its own node, so choosing
        another option of it replaces that node, provided nothing else wrote into the node (checked:
        the base's node must equal its own option file). Otherwise compose in full.
        """
        swaps = [g for g in groups if self._plain_option(g) is not None]
        rest = tuple(g for g in groups if g not in swaps)
        base = self._cached(rest)
        cfg = copy.deepcopy(base)
        choices = self._choices[rest]
        for item in swaps:
            group, name = item.split("=", 1)
            current = choices.get(group)
            current_file = self._plain_option(f"{group}={current}") if current else None
            if current_file is None or OmegaConf.to_container(cfg[group]) != self._option(current_file):
                return copy.deepcopy(self._cached(tuple(groups)))
            with open_dict(cfg):
                cfg[group] = self._option(self._plain_option(item))
        return cfg

    def _option(self, path: Path) -> dict:
        if path not in self._options:
            self._options[path] = OmegaConf.to_container(OmegaConf.load(path))
        return copy.deepcopy(self._options[path])

    def _plain_option(self, item: str) -> Path | None:
        group, _, name = item.partition("=")
        if not name or "/" in group or group.startswith(("+", "~", "hydra")) or group not in self.groups:
            return None
        for directory in self._dirs:
            path = directory / group / f"{name}.yaml"
            if path.is_file():
                text = path.read_text()
                if "@package" in text or "defaults" in (OmegaConf.load(path) or {}):
                    return None
                return path
        return None

    def _cached(self, groups: tuple[str, ...]) -> DictConfig:
        if groups not in self._composed:
            self._composed[groups] = self._compose(list(groups))
        composed = self._composed[groups]
        if isinstance(composed, ConfigUnavailable):
            raise composed
        return composed

    def _compose(self, overrides: list[str]) -> DictConfig | ConfigUnavailable:
        if GlobalHydra.instance().is_initialized():
            GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(version_base="1.3", config_dir=str(self.conf_dir)):
                cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
        except (HydraException, OmegaConfBaseException) as err:
            return ConfigUnavailable(str(err).splitlines()[0])
        self._choices[tuple(overrides)] = {k: v for k, v in OmegaConf.to_container(cfg.hydra.runtime.choices).items()}
        with open_dict(cfg):
            del cfg["hydra"]
        return cfg


def run_dir(cfg: DictConfig) -> Path:
    """Where ``python run.py`` puts (and looks for) this configuration's run."""
    from grft_app.lit.app import run_dir_of

    return run_dir_of(cfg)
