"""Compose the configuration a cell will run with, exactly as ``python run.py <overrides>`` would.

Hydra composes in two steps: the overrides that choose config-group options (``experiment=fgvc/cub``,
``method=gps``) build the defaults tree, which is merged into one config; the other overrides (``k=5``,
``lr=0.003``) are then applied to that config. The paper has hundreds of cells that differ only in the
second kind, and a compose takes ~0.2 s, so the first step runs through ``hydra.compose`` once per
distinct set of group choices (cached), and the second through the function Hydra's own compose applies
them with (``ConfigLoaderImpl._apply_overrides_to_config``), on a copy. Which override belongs to which
step is decided by Hydra's rule (its ``Overrides`` split): a key that names a config group, with a
value that is not a dict, chooses an option; ``hydra.*`` overrides stay with the compose too (they
can move the search path). Same steps, same order, same code: the result is a full compose's.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.global_hydra import GlobalHydra
from hydra.core.object_type import ObjectType
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from grft_app.paths import CONF_DIR

PRIMARY = "config"


class ConfigUnavailable(LookupError):
    """A cell's configuration cannot be composed (e.g. its dataset or method config is not there yet)."""


class Composer:
    """Composes cells' configs under one config directory, plus ``extra`` overrides for every cell.

    ``extra`` is what a make target passes along to every run (``debug=smoke``, ``paths.runs=...``,
    ``hydra.searchpath=[file:///dir]``), so the render half composes what the run half ran.
    """

    def __init__(self, extra: Iterable[str] = (), conf_dir: Path = CONF_DIR):
        from grft_app.run.settings import register_resolvers

        register_resolvers()
        self.conf_dir = Path(conf_dir).resolve()
        self.extra = [str(o) for o in extra]
        self._parser = OverridesParser.create()
        self._composed: dict[tuple[str, ...], DictConfig | ConfigUnavailable] = {}
        self._group_options: dict[str, set[str]] = {}

    def config(self, overrides: Sequence[str]) -> DictConfig:
        """The composed config of ``overrides`` + ``extra``; raises ``ConfigUnavailable`` with Hydra's reason."""
        items = [*overrides, *self.extra]
        try:
            parsed = self._parser.parse_overrides(items)
            ConfigLoaderImpl.validate_sweep_overrides_legal(parsed, run_mode=RunMode.RUN, from_shell=False)
            choices = tuple(o.input_line for o in parsed if self._shapes_defaults(o))
            values = [o for o in parsed if not self._shapes_defaults(o)]
            cfg = copy.deepcopy(self._cached(choices))
            ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
        except (HydraException, OmegaConfBaseException) as err:
            raise ConfigUnavailable(f"overrides {items}: {str(err).splitlines()[0]}") from None
        return cfg

    def _shapes_defaults(self, override: Override) -> bool:
        """Hydra's split: a config-group choice (or a ``hydra.*`` setting) goes into the defaults tree."""
        if override.is_hydra_override():
            return True
        return not isinstance(override.value(), dict) and self._group_exists(override.key_or_group)

    def _group_exists(self, key: str) -> bool:
        parent, _, leaf = key.rpartition("/")
        if parent not in self._group_options:
            self._group_options[parent] = set(self._loader_query(parent))
        return leaf in self._group_options[parent]

    def _loader_query(self, parent: str) -> list[str]:
        """The config groups under ``parent`` on the search path the ``extra`` overrides give (Hydra's own listing)."""
        hydra_extra = [o for o in self.extra if o.lstrip("+~").startswith("hydra.")]
        with self._hydra():
            loader = GlobalHydra.instance().config_loader()
            return loader.get_group_options(parent, ObjectType.GROUP, config_name=PRIMARY, overrides=hydra_extra)

    def _cached(self, choices: tuple[str, ...]) -> DictConfig:
        if choices not in self._composed:
            self._composed[choices] = self._compose(list(choices))
        composed = self._composed[choices]
        if isinstance(composed, ConfigUnavailable):
            raise composed
        return composed

    def _compose(self, overrides: list[str]) -> DictConfig | ConfigUnavailable:
        try:
            with self._hydra():
                return compose(config_name=PRIMARY, overrides=overrides)
        except (HydraException, OmegaConfBaseException) as err:
            return ConfigUnavailable(str(err).splitlines()[0])

    def _hydra(self):
        if GlobalHydra.instance().is_initialized():
            GlobalHydra.instance().clear()
        return initialize_config_dir(version_base="1.3", config_dir=str(self.conf_dir))


def run_dir(cfg: DictConfig) -> Path:
    """Where ``python run.py`` puts (and looks for) this configuration's run."""
    from grft_app.run.app import run_dir_of

    return run_dir_of(cfg)
