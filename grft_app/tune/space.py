"""A search space written as Hydra sweep overrides, read as Optuna distributions.

``conf/tune/<method>.yaml`` lists ``hydra.sweeper.params`` in Hydra's own sweep syntax (the one
``-m`` takes on the command line): ``choice(1, 2, 4)``, ``range(1, 9)``, ``interval(1e-4, 1e-2)``,
and ``tag(log, interval(...))`` for a log scale. Plain overrides (``seed=1``) are fixed for every
trial; a key fixed on the command line (``k=auto``) leaves the space.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def parse(overrides: Iterable[str], parser) -> tuple[dict[str, Any], dict[str, str]]:
    """``(space, fixed)``: Optuna distributions by key, and plain overrides (as written) by key; later ones win."""
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep

    space: dict[str, Any] = {}
    fixed: dict[str, str] = {}
    for override in parser.parse_overrides(list(overrides)):
        key = override.get_key_element()
        space.pop(key, None)
        fixed.pop(key, None)
        if not override.is_sweep_override():
            fixed[key] = override.input_line or f"{key}={override.get_value_element_as_str()}"
            continue
        value = override.value()
        if isinstance(value, ChoiceSweep):
            space[key] = _categorical([_plain(v) for v in value.list])
        elif isinstance(value, RangeSweep):
            space[key] = _range(value)
        elif isinstance(value, IntervalSweep):
            space[key] = _interval(value)
        else:  # pragma: no cover - Hydra has no other sweep kinds
            raise ValueError(f"{key}: the tuner does not read the sweep {override.input_line!r}")
    return space, fixed


def _plain(value: Any) -> Any:
    from hydra.core.override_parser.types import QuotedString

    return value.text if isinstance(value, QuotedString) else value


def _categorical(choices: list):
    from optuna.distributions import CategoricalDistribution

    return CategoricalDistribution(choices)


def _range(value):
    from optuna.distributions import IntDistribution

    if all(isinstance(v, int) for v in (value.start, value.stop, value.step)) and value.step > 0:
        values = list(value.range())
        if not values:
            raise ValueError(f"range({value.start}, {value.stop}, {value.step}) is empty")
        return IntDistribution(values[0], values[-1], step=value.step, log="log" in value.tags and value.step == 1)
    return _categorical(list(value.range()))


def _interval(value):
    from optuna.distributions import FloatDistribution, IntDistribution

    log = "log" in value.tags
    if isinstance(value.start, int) and isinstance(value.end, int):
        return IntDistribution(value.start, value.end, log=log)
    return FloatDistribution(float(value.start), float(value.end), log=log)


def as_overrides(params: Mapping[str, Any]) -> list[str]:
    """A trial's values as Hydra overrides (``lambda=1e-06``, ``regular_layers=all``)."""
    return [f"{key}={value}" for key, value in params.items()]


def describe(space: Mapping[str, Any]) -> dict[str, str]:
    """The space in words, as the study saves it (a resumed study must search the same one)."""
    from optuna.distributions import distribution_to_json

    return {key: distribution_to_json(dist) for key, dist in sorted(space.items())}
