"""A run's identity: the one rule for "is this the same run?", used by the run key and by the tables.

``run_identity(config)`` is the flat ``dotted.key -> value`` of every setting that decides a run's
result, plus the results version. The run key (``run_key``: where ``python run.py`` puts a run, so a
sweep skips what is done) hashes it with the data's identity; the paper's tables
(``experiments.paper.matching``) fill a cell with the records whose identity, seed aside, is the
cell's. Both read this module, so a sweep never counts a run as done that a table shows as a hole,
or the reverse. (It imports no Lightning and no Hydra: the table renderer reads it.)

The rule: a setting that can change a run's numbers belongs to its identity; one that only changes
where the run is written, how it is shown or launched, or how fast it runs, does not. Floating-point
sums that come out different in the last bits are not a change of numbers here: the same config on
another machine (another CPU's vector kernels, another GPU) already differs that way, and no key can
hold the machine. Key by key:

In the identity
- ``method.*`` (the method and its options), ``model.*`` (which network, its size, dtype, input
  size and normalisation, ``tiny``), ``dataset.*`` (task, classes, split settings);
- GRFT's settings (``k``, ``selection``, ``norm``, ``lambda``, ``regular_layers``, ``subsets``,
  ``probe.temperature``: ``grft_app.grft_settings``), for a method that reads them
  (``Method.grft_keys``; a baseline reads none, GPS ``k`` and its probe's temperature): a baseline
  run serves every GRFT setting, in the run key and in the tables alike. A setting exposed after
  runs were recorded is out at the value those runs had (its ``recorded_default``: temperature
  0.07), so their keys and cells stay;
- ``probe.*`` but ``probe.memory`` and ``probe.passes`` (below), for a method that probes the data
  before training (GRFT, GPS);
- the optimisation: ``lr``, ``batch_size``, ``epochs``, ``warmup_epochs``, ``optimizer``,
  ``weight_decay``, ``augment.*``, ``protocol.*``, ``seed`` (the tables aggregate over seeds);
- ``trainer.*`` but the keys below: ``precision`` (bf16 is another result, not the last bits),
  ``devices`` and ``num_nodes`` (the global batch is ``batch_size`` x world size), ``max_epochs``,
  ``limit_*_batches``, gradient clipping or accumulation, and any trainer key not named below (an
  unknown key counts, so a new one errs on the side of another run);
- the results version (``RESULTS_VERSION``): raised when the code's numbers change, which
  ``tests/app/test_results_golden.py`` notices.

Not in the identity
- ``paths``, ``logger``, ``tags``, ``progress``, ``trace_memory_every``, ``force``, ``hydra`` and
  ``run_name`` (which holds the run key itself): where a run goes and how it is shown;
- ``baselines``: which other runs a launch starts; each of them has its own identity;
- ``recipe``: a baseline recipe's labels and its table of per-task settings; what it sets for this
  task reaches the run through the keys it sets (``lr``, ``method.*``...), which are in;
- ``num_workers``: augmentation draws are seeded per (epoch, sample), not per worker
  (``grft_app.lit.sampling``), so the workers change only the speed;
- ``cpu_threads``, ``trainer.accelerator``, ``trainer.strategy``, ``trainer.deterministic``,
  ``trainer.benchmark``: where and how fast the same arithmetic runs (last bits only, see above);
- ``eval_batch_size``: evaluation in other batch shapes; the same samples, the same model, sums in
  another order (last bits; under bf16 a little more, and a prediction flips only on a near tie);
- ``model.checkpoint``, ``model.cache_dir``, ``model.local_files_only``: where the weights of
  ``model.name`` are read from, not which network it is. A checkpoint must hold ``model.name``'s
  weights; other weights need another ``model.name``;
- ``trainer.log_every_n_steps``, ``enable_model_summary``, ``enable_progress_bar``: what is shown;
- ``_target_`` at any depth (``method._target_``...), ``model.builder`` and ``dataset.builder``: the
  code a group's YAML names to build it (``grft_app.builders``). Which
  method, model or data a run has is in its settings already (``method.name`` and its options,
  ``model.name`` and ``model.family``, ``dataset.*``), and code that changes a run's numbers raises
  ``RESULTS_VERSION``; so moving a class to another module keeps every run key, and records written
  before the YAML named its code still match;
- ``probe.memory``, ``probe.passes``: how many passes over the probe data GRFT's probe makes to
  sum the gradients (one group of layers per pass, ``grft.passes``); the selection is the same bits
  for any count, so they change the probe's memory and time only;
- ``data_dir``: the data is in the run key by content instead (``grft_app.data.identity``: the
  task folder and a hash of its split files). The tables match records by their config alone: they
  may be rendered where the data is not, from a copy of the runs folder that holds one data folder's runs.

Values are compared as JSON after one normalisation: a whole float is the int (``k=2.0`` is ``k=2``,
``lr=1`` is ``lr=1.0``), as the app reads them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from .grft_settings import KEYS, SETTINGS
from .methods import Method, method_class

# Raise by one whenever a change of code changes a run's numbers (the golden test says when).
# Every run key changes with it, so no run made by code with other numbers is found "already done"
# and no table shows one. 1: every run before this number existed.
RESULTS_VERSION = 2

GRFT_KEYS = KEYS  # the settings table's config keys
PROBE_KEYS = ("probe",)

# Dotted prefixes of the settings that are not part of a run's identity (see the module docstring).
NOT_IDENTITY = (
    "hydra",
    "run_name",
    "paths",
    "logger",
    "tags",
    "progress",
    "trace_memory_every",
    "force",
    "baselines",
    "recipe",
    "data_dir",
    "num_workers",
    "cpu_threads",
    "eval_batch_size",
    "model.checkpoint",
    "model.cache_dir",
    "model.local_files_only",
    "model.builder",
    "dataset.builder",
    "probe.memory",
    "probe.passes",
    "trainer.accelerator",
    "trainer.strategy",
    "trainer.deterministic",
    "trainer.benchmark",
    "trainer.log_every_n_steps",
    "trainer.enable_model_summary",
    "trainer.enable_progress_bar",
)
RESULTS_KEY = "results_version"
# Last parts of a dotted key that name code rather than a setting (see the module docstring).
CODE_KEYS = ("_target_",)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay whole values, an empty mapping stays ``{}``."""
    if isinstance(tree, Mapping):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out if out or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: tree}


def normal(value: Any) -> Any:
    """The value as the identity compares it: a whole float as the int, lists element by element."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, (list, tuple)):
        return [normal(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): normal(v) for k, v in value.items()}
    return value


def _within(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def _unused_by(method: str | None) -> tuple[str, ...]:
    """GRFT's keys (and the probe's) that ``method`` does not read; none for an unknown method."""
    try:
        cls = method_class(str(method))
    except ValueError:
        return ()
    unused = tuple(key for key in GRFT_KEYS if key not in cls.grft_keys)
    return unused + (PROBE_KEYS if cls.needs_probe is Method.needs_probe else ())


RECORDED_DEFAULTS = {s.key: s.recorded_default for s in SETTINGS if s.recorded_default is not None}


def _as_recorded(key: str, value: Any) -> bool:
    """A setting exposed after runs were recorded, at the value those runs had (out of the identity)."""
    return key in RECORDED_DEFAULTS and normal(value) == normal(RECORDED_DEFAULTS[key])


_CURRENT = object()


def run_identity(config: Mapping, results_version: Any = _CURRENT) -> dict[str, Any]:
    """The settings of a resolved ``config`` (a plain mapping) that decide its run's result, flat and
    normalised, with ``results_version`` (a record's own; by default the code's, ``RESULTS_VERSION``)."""
    if results_version is _CURRENT:
        results_version = RESULTS_VERSION
    method = (config.get("method") or {}).get("name") if isinstance(config.get("method"), Mapping) else None
    left_out = NOT_IDENTITY + _unused_by(method)
    ident = {
        key: normal(value)
        for key, value in flatten(config).items()
        if not _within(key, left_out) and key.rsplit(".", 1)[-1] not in CODE_KEYS and not _as_recorded(key, value)
    }
    ident[RESULTS_KEY] = results_version
    return ident


def cell_identity(ident: Mapping[str, Any]) -> dict[str, Any]:
    """A run identity less its seed: what a table cell, which aggregates seeds, matches on."""
    return {key: value for key, value in ident.items() if key != "seed"}


def run_key(config: Mapping, data: Mapping) -> str:
    """The run key: a short hash of ``run_identity(config)`` and the data's identity (``data_identity``)."""
    payload = {"identity": run_identity(config), "data": dict(data)}
    return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:10]
