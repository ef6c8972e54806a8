"""GRFT's settings, one row each: the config key users type, the ``GRFTConfig`` field, the record's field.

Everything that reads a GRFT setting reads this table: the settings object (``run.settings.grft_config``),
the number checks, the record's facts (``lit.runner``), the run identity (``grft_app.identity``: a
method's unused settings are left out) and each method's list of what it reads (``Method.grft_keys``).
Exposing another ``GRFTConfig`` field is one row here plus its default in ``conf/config.yaml``.

``key`` is dotted where the setting lives in a group (``selection.kind``, ``probe.temperature``);
the top-level keys (``k``, ``lambda``, ``regular_layers``, ``subsets``) and the ``selection``/``norm``
groups are what users type and stay so. ``record``: the ``RunRecord`` field that shows the value on
its own (``None``: the record's ``config`` holds it). ``read``: how the app reads the config's value
(Hydra hands ``k=2.0`` or ``k='2'`` through as typed). ``recorded_default``: for a setting exposed
after runs were recorded, the value those runs had; at that value the setting stays out of the run
identity, so their run keys and table cells do not change (``None``: always in).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


def whole(value: Any) -> Any:
    """Whole numbers as ints (``2.0``, ``'2'``); anything else as given, for ``GRFTConfig`` to judge."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return value


def as_given(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Setting:
    key: str  # the config key, dotted
    field: str  # the ``GRFTConfig`` field
    record: str | None  # the ``RunRecord`` field (None: only in the record's config)
    read: Callable[[Any], Any] = as_given
    number: type | None = None  # int / float: ``run.settings.check_numbers`` names the key if it is not one
    recorded_default: Any = None


SETTINGS: tuple[Setting, ...] = (
    Setting("k", "k", "k", whole, int),
    Setting("selection.kind", "selection", "selection", str),
    Setting("norm.kind", "norm", "norm", str),
    Setting("lambda", "lam", "lambda_", float, float),
    Setting("regular_layers", "regular_layers", "regular_layers"),
    Setting("subsets", "subsets", "subsets", whole, int),
    Setting("probe.temperature", "temperature", None, float, float, recorded_default=0.07),
)
KEYS = tuple(s.key for s in SETTINGS)
BY_KEY = {s.key: s for s in SETTINGS}


def lookup(cfg: Mapping, key: str) -> Any:
    """The value at dotted ``key`` of a config (a DictConfig or a plain mapping); ``None`` where absent."""
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, Mapping) and not hasattr(node, "get"):
            return None
        node = node.get(part)
        if node is None:
            return None
    return node


def config_fields(cfg: Mapping) -> dict[str, Any]:
    """``GRFTConfig`` keyword arguments from a composed config: every setting the config holds, read."""
    values = {s.field: lookup(cfg, s.key) for s in SETTINGS}
    return {s.field: s.read(values[s.field]) for s in SETTINGS if values[s.field] is not None}


def in_key_words(message: str) -> str:
    """A ``GRFTConfig`` error in the words users type: ``lam (lambda)`` -> ``lambda``, ``temperature`` ->
    ``probe.temperature``."""
    for s in SETTINGS:
        message = message.replace(f"{s.field} ({s.key})", s.key)
        if s.key.endswith(f".{s.field}") and message.startswith(f"{s.field} "):
            message = s.key + message[len(s.field) :]
    return message
