"""Compose the configuration a cell will run with, exactly as ``python run.py <overrides>`` would.

Hydra composes in two steps: the overrides that choose config-group options (``experiment=fgvc/cub``,
``method=gps``) build the defaults tree, which is merged into one config; the other overrides (``k=5``,
``lr=0.003``) are then applied to that config. The paper has hundreds of cells that differ only in the
second kind, and a compose takes ~0.2 s, so the first step runs through ``hydra.compose`` once per
distinct set of group choices (cached), and the second on a copy of that config with OmegaConf's own
operations, by the rules Hydra's command line documents: ``key=value`` changes a key that exists,
``+key=value`` adds one that does not, ``++key=value`` adds or changes, ``~key`` deletes; a value is
merged into what is there. Which override belongs to which step is decided by Hydra's rule (its
``Overrides`` split): a key that names a config group, with a value that is not a dict, chooses an
option; ``hydra.*`` overrides stay with the compose too (they can move the search path). Same steps,
same order: the result is a full compose's (tests/paper/test_results_identity.py compares the two).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.object_type import ObjectType
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import ConfigCompositionException, HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

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
            _refuse_sweeps(parsed)
            choices = tuple(o.input_line for o in parsed if self._shapes_defaults(o))
            values = [o for o in parsed if not self._shapes_defaults(o)]
            cfg = copy.deepcopy(self._cached(choices))
            for override in values:
                apply_value_override(override, cfg)
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


def _refuse_sweeps(overrides: Sequence[Override]) -> None:
    """A cell is one run: ``k=1,2`` (a sweep) is refused, as ``python run.py`` without ``-m`` refuses it."""
    for override in overrides:
        if override.is_sweep_override():
            raise ConfigCompositionException(
                f"Ambiguous value for argument {override.input_line!r}: a cell is one run, not a sweep; a list is "
                "key=[a,b], a string with a comma is quoted: key='a,b'"
            )


def apply_value_override(override: Override, cfg: DictConfig) -> None:
    """Apply one override that sets a value (not a config-group choice) to ``cfg``, in place.

    ``key=v`` changes an existing key (a missing one is an error naming ``+key=v``), ``+key=v`` adds a key
    (an existing one is an error, unless ``v`` is a dict or list, which is merged in), ``++key=v`` adds or
    changes, ``~key`` (or ``~key=v``, checked against the current value) deletes.
    """
    key, value, line = override.key_or_group, override.value(), override.input_line
    if override.package is not None:
        raise ConfigCompositionException(f"{line} looks like a config group override, but group {key!r} does not exist")
    try:
        if override.is_delete():
            _delete(cfg, key, value)
        elif override.is_add():
            if OmegaConf.select(cfg, key, throw_on_missing=False) is not None and not isinstance(value, (dict, list)):
                raise ConfigCompositionException(f"{line}: {key} exists; change it with {line[1:]} or +{line}")
            OmegaConf.update(cfg, key, value, merge=True, force_add=True)
        elif override.is_force_add():
            OmegaConf.update(cfg, key, value, merge=True, force_add=True)
        else:
            try:
                OmegaConf.update(cfg, key, value, merge=True)
            except (ConfigAttributeError, ConfigKeyError):
                raise ConfigCompositionException(f"Could not override {key!r}: to add it use +{line}") from None
    except OmegaConfBaseException as err:
        raise ConfigCompositionException(f"Error merging override {line}: {str(err).splitlines()[0]}") from None


def _delete(cfg: DictConfig, key: str, value: object) -> None:
    current = OmegaConf.select(cfg, key, throw_on_missing=False)
    if current is None:
        raise ConfigCompositionException(f"Could not delete {key!r}: it does not exist")
    if value is not None and value != current:
        raise ConfigCompositionException(f"Could not delete {key!r}: its value is {current}, not {value}")
    parent, _, leaf = key.rpartition(".")
    with open_dict(cfg):
        del (OmegaConf.select(cfg, parent) if parent else cfg)[leaf]


def run_dir(cfg: DictConfig) -> Path:
    """Where ``python run.py`` puts (and looks for) this configuration's run."""
    from grft_app.run.settings import run_dir_of

    return run_dir_of(cfg)
