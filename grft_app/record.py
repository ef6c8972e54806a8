"""One typed record per run, written atomically; and reading them all back.

A record is ``record.json`` in the run's directory, the JSON form of ``RunRecord``. ``done: true``
marks a finished run; sweeps skip a run whose record is done, and tables read only done records.
A run that did not finish says why in ``status``: ``failed`` (with its ``error``), ``preempted``
(stopped by SIGTERM) or ``interrupted`` (stopped by Ctrl-C); launching it again resumes it. A
finished record keeps the SHA-256 of each file it names (``checksums``), so a damaged output is
found before a launch reports the run as done. A record without ``status`` is read as
``done`` or ``unfinished`` from its ``done`` flag (``RunRecord.state``).

The layout carries its version (``schema``). Reading is strict, so a table never shows a number
read from a key that means something else: a file that is not JSON, a schema version this code
does not read, an unknown key or a value of the wrong type is ``CorruptRecord``, one line naming the
file and the fix. A key that the schema leaves optional and a record lacks (records written before
it existed have no ``status``, ``evaluation``, ``launches``, ``code``...) reads as ``None``. Schema 2
added ``checksums`` and ``interrupted_at`` to schema 1; a change of meaning or layout bumps
``SCHEMA_VERSION``.

Hand-written (de)serialisation: the layout is a handful of small dataclasses, and the standard
library's ``dataclasses`` and ``typing`` read it without a new dependency.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import os
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from grft.io import write_json_atomic

RECORD_NAME = "record.json"
HISTORY_DIR = "history"  # earlier records of a run that force=true started again; not read by tables
SCHEMA_VERSION = 2  # the layout written now
READABLE_SCHEMAS = (1, 2)  # the layouts this code reads
FIX = "launch the run again with force=true (it trains the run again and keeps the old file in history/)"

# Field metadata. ``key``: the JSON key when it is not the field's name. ``keep_null``: written even
# when None (the run's identity: every record lists the same keys, null where a method does not use
# one). ``transient``: never written (where the record was read from).
KEEP_NULL = {"keep_null": True}


class CorruptRecord(ValueError):
    """A record file this code cannot read (not JSON, or not the layout it reads); the message names it and the fix."""


class UnknownSchema(CorruptRecord):
    """A record written under a schema version this code does not read (by another version of the code)."""


class _Mismatch(ValueError):
    """A value that is not what the layout says; the message is the dotted key and what was found."""


# ----------------------------------------------------------------------------------------------------
# The layout (schema 1)


@dataclass
class CodeFacts:
    """The code that ran: its results version (``grft_app.identity.RESULTS_VERSION``, in the run key; the
    tables match only records of the current one; ``None`` in records written before it existed), the
    package version and the checkout's commit (provenance only)."""

    version: str | None = field(default=None, metadata=KEEP_NULL)
    commit: str | None = field(default=None, metadata=KEEP_NULL)
    uncommitted_changes: bool | None = field(default=None, metadata=KEEP_NULL)
    results_version: int | None = None


@dataclass
class Params:
    """Trainable parameters of the tuned model (the same at every epoch)."""

    trainable: int
    total: int
    pct: float


@dataclass
class Timings:
    """Seconds and memory; a preempted record has only ``train_s``."""

    train_s: float | None = None  # all launches of the run together
    train_s_this_launch: float | None = None
    probe_s: float | None = None  # the selection probe (GRFT, GPS); None for other methods
    eval_in_training_s: float | None = None  # evaluation inside training (protocol.test_every), part of train_s
    fit_s: float | None = None
    step_s_median: float | None = None
    steps_timed: int | None = None
    peak_mem_mb: float | None = None
    peak_mem_kind: str | None = None  # cuda_max_allocated | ru_maxrss


@dataclass
class Launch:
    """One launch of the run (``launches.json``; a resumed run has several)."""

    started_at: str
    resumed: bool
    train_s: float
    steps: int
    outcome: str  # trained | preempted | interrupted | failed | killed (running: only while it runs)
    ended_at: str | None = None


@dataclass
class Reported:
    """Which number of ``metrics`` the tables compare with the paper, and that in words."""

    statistic: str  # final | best
    model: str  # raw | ema
    key: str  # the ``metrics`` key of test_acc
    description: str


@dataclass
class Tuning:
    """The study (``make tune``) a run belongs to: one of its trials, or the final run on the settings it chose."""

    study: str
    stage: str  # trial (validation only, never tested) | final (train + val, tested once)
    storage: str | None = None  # the study's folder (Optuna's study.db, study.json)
    objective: str | None = None  # the validation metric the study maximises, e.g. val_acc_best
    trial: int | None = None  # final: the trial whose settings it trains
    value: float | None = None  # final: that trial's objective


@dataclass
class Evaluation:
    """What was evaluated when (docs/PROTOCOL.md, "Evaluation"); the values themselves are in ``metrics``."""

    protocol: str
    reported: Reported
    test_every: int | None = None
    final_epoch: int | None = None
    ema: bool | None = None
    curve: list[dict[str, float]] | None = None  # per evaluated epoch: {"epoch": e, "test_acc": ...}
    selected_on: str | None = None  # val: the settings were chosen on validation data (a study's final run)
    tuning: Tuning | None = None


@dataclass
class Budget:
    """``k=auto share=<percent>``: the budget asked for, and the k and share it gave."""

    share: float  # percent asked for
    k: int
    pct: float  # the trainable share at that k


@dataclass
class RunRecord:
    """What a run was, and what became of it. ``to_json`` / ``from_json`` are the file's layout."""

    task: str
    method: str
    done: bool
    schema_version: int = field(default=SCHEMA_VERSION, metadata={"key": "schema"})
    status: str | None = None  # done | failed | preempted | interrupted; absent in the earliest records
    # What the run is (``runner.identity_facts``): GRFT's keys are None for a method that does not use them.
    family: str | None = field(default=None, metadata=KEEP_NULL)
    model: str | None = field(default=None, metadata=KEEP_NULL)
    selection: str | None = field(default=None, metadata=KEEP_NULL)
    norm: str | None = field(default=None, metadata=KEEP_NULL)
    k: int | None = field(default=None, metadata=KEEP_NULL)
    lambda_: float | None = field(default=None, metadata={"key": "lambda", **KEEP_NULL})
    regular_layers: int | str | None = field(default=None, metadata=KEEP_NULL)
    subsets: int | None = field(default=None, metadata=KEEP_NULL)
    seed: int | None = field(default=None, metadata=KEEP_NULL)
    lr: float | None = field(default=None, metadata=KEEP_NULL)
    batch_size: int | None = field(default=None, metadata=KEEP_NULL)
    epochs: int | None = field(default=None, metadata=KEEP_NULL)
    tags: dict[str, Any] | list[Any] | None = field(default=None, metadata=KEEP_NULL)
    config: dict[str, Any] = field(default_factory=dict)  # the full resolved config (tables match on it)
    code: CodeFacts | None = None
    multirun: str | None = field(default=None, metadata=KEEP_NULL)  # the multirun's id (sweep_summary)
    # What became of it.
    metrics: dict[str, float] | None = None
    params: Params | None = None
    timings: Timings | None = None
    device: str | None = None
    memory_trace: str | None = None  # file name in the run directory
    adapter_file: str | None = None  # the raw model's adapter (= adapter_files["raw"])
    adapter_files: dict[str, str] | None = None  # raw / ema -> file name
    selection_file: str | None = None
    checksums: dict[str, str] | None = None  # file name -> SHA-256 of every output file named above
    probe_facts: dict[str, Any] | None = None  # what the method's probe returned; None without a probe
    class_names: list[str] | None = None  # each class id's name, where the data names them (your own data)
    split_file: str | None = None  # which items went to which split (your own data), in the run directory
    evaluation: Evaluation | None = None  # absent in records written before records said so
    budget: Budget | None = None  # k=auto: the share asked for and the k it gave
    resumed: bool | None = None
    launches: list[Launch] | None = None
    started_at: str | None = None
    finished_at: str | None = None
    preempted_at: str | None = None
    interrupted_at: str | None = None
    failed_at: str | None = None
    error: str | None = None
    run_dir: Path | None = field(default=None, compare=False, repr=False, metadata={"transient": True})

    # -- the file's layout --------------------------------------------------------------------------

    def to_json(self) -> dict:
        """The JSON object of ``record.json`` (schema ``schema_version``)."""
        return _to_json(self)

    @classmethod
    def from_json(cls, data: Any, source: str | Path = "run record", run_dir: Path | None = None) -> RunRecord:
        """Strict: anything but the layout of a readable schema is ``CorruptRecord`` naming ``source`` and the fix."""
        if not isinstance(data, dict):
            raise CorruptRecord(f"{source} is not a valid run record (not a JSON object); delete it, or {FIX}")
        schema = data.get("schema")
        if schema not in READABLE_SCHEMAS:
            raise UnknownSchema(_unknown_schema(source, schema, data))
        try:
            record = _from_json(cls, data, "")
        except _Mismatch as err:
            written = _written_by(data)
            raise CorruptRecord(
                f"{source} is not a valid run record of schema {schema} ({err}); if another version of grft wrote it"
                f"{written}, render it with that version; otherwise delete it, or {FIX}"
            ) from None
        record.run_dir = Path(run_dir) if run_dir is not None else None
        return record

    # -- reading it --------------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """``done``, ``failed``, ``preempted``, ``interrupted`` or ``unfinished``.

        The earliest records carry only ``done``."""
        if self.done:
            return "done"
        return self.status or "unfinished"

    def metric_key(self, metric: str) -> str:
        """Where ``metrics`` keeps the number the run's protocol reports for ``metric`` (e.g. ``test_acc``).

        A record written before records said so (no ``evaluation``) holds only the final test of
        the model it evaluated: ``metric`` itself.
        """
        if self.evaluation is None:
            return metric
        reported = self.evaluation.reported
        return reported_key(metric, reported.statistic, reported.model)

    def reported(self, metric: str) -> float | None:
        """The number the run's protocol reports for ``metric``; None when the record has none."""
        value = (self.metrics or {}).get(self.metric_key(metric))
        return None if value is None else float(value)

    @property
    def statistic(self) -> str:
        """The reported statistic in words (``final`` for records written before records said so)."""
        if self.evaluation is None:
            return "final test accuracy (a record without an evaluation block)"
        return self.evaluation.reported.description


def reported_key(metric: str, statistic: str = "final", model: str = "raw") -> str:
    """The ``metrics`` key of ``metric`` (e.g. ``test_acc``) as a statistic of a model.

    ``reported_key("test_acc", "best", "ema") == "test_ema_acc_best"``; final and raw are the plain key.
    """
    split, _, name = metric.partition("_")
    key = f"{split}_ema_{name}" if model == "ema" else metric
    return f"{key}_best" if statistic == "best" else key


def status_of(record: RunRecord | None) -> str:
    """``record.state``, or ``missing`` when there is no record."""
    return record.state if record is not None else "missing"


# ----------------------------------------------------------------------------------------------------
# Files


def write_record(run_dir: Path, record: RunRecord) -> Path:
    """Write ``record`` as the run's ``record.json``; a record this code could not read back is refused first."""
    payload = record.to_json()
    RunRecord.from_json(json.loads(json.dumps(payload, default=str)), f"the record of {run_dir}")
    record.run_dir = Path(run_dir)
    return write_json_atomic(Path(run_dir) / RECORD_NAME, payload)


def load_record_file(path: Path) -> RunRecord:
    """The record in ``path`` (its ``run_dir`` the file's folder); ``CorruptRecord`` if it cannot be read."""
    try:
        data = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CorruptRecord(f"{path} is not a valid run record ({err}); delete it, or {FIX}") from None
    return RunRecord.from_json(data, path, run_dir=Path(path).parent)


def read_record(run_dir: Path) -> RunRecord | None:
    """The run's record, ``None`` if it has none; ``CorruptRecord`` if the file cannot be read."""
    path = Path(run_dir) / RECORD_NAME
    if not path.is_file():
        return None
    return load_record_file(path)


def is_done(run_dir: Path) -> bool:
    record = read_record(run_dir)
    return bool(record and record.done)


def archive_record(run_dir: Path) -> Path | None:
    """Move the run's record (even a damaged one) to ``history/<time>-record.json``; returns the new path.

    Not named ``record.json``, so ``iter_records`` (and every table) never reads it."""
    path = Path(run_dir) / RECORD_NAME
    if not path.is_file():
        return None
    history = Path(run_dir) / HISTORY_DIR
    history.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%dT%H%M%S")
    target = history / f"{stamp}-{RECORD_NAME}"
    os.replace(path, target)
    return target


def iter_records(
    root: Path, done_only: bool = True, on_corrupt: Callable[[CorruptRecord], None] | None = None
) -> Iterator[RunRecord]:
    """Every record under ``root`` (recursively), each with its ``run_dir``.

    A record that cannot be read is passed to ``on_corrupt`` (default: raise), never dropped silently.
    """
    for path in sorted(Path(root).rglob(RECORD_NAME)):
        try:
            record = load_record_file(path)
        except CorruptRecord as err:
            if on_corrupt is None:
                raise
            on_corrupt(err)
            continue
        if done_only and not record.done:
            continue
        yield record


# ----------------------------------------------------------------------------------------------------
# Dataclasses <-> JSON


def _json_key(f: dataclasses.Field) -> str:
    return f.metadata.get("key", f.name)


def _to_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if f.metadata.get("transient") or (item is None and not f.metadata.get("keep_null")):
                continue
            out[_json_key(f)] = _to_json(item)
        return out
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _from_json(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise _Mismatch(f"{where or 'the record'} is {type(data).__name__}, not an object")
    known = {_json_key(f): f for f in dataclasses.fields(cls) if not f.metadata.get("transient")}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise _Mismatch(f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(where + k for k in unknown)}")
    values = {}
    for key, f in known.items():
        if key in data:
            values[f.name] = _value(_hints(cls)[f.name], data[key], where + key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise _Mismatch(f"{where + key} is missing")
    return cls(**values)


def _value(kind: Any, value: Any, where: str) -> Any:
    """``value`` checked against the annotation ``kind`` (dataclasses built, numbers kept as written)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _value(options[0], value, where)
        for arg in options:
            try:
                return _value(arg, value, where)
            except _Mismatch:
                continue
        raise _Mismatch(f"{where} is {_short(value)}, not {_name(kind)}")
    if dataclasses.is_dataclass(kind):
        return _from_json(kind, value, f"{where}.")
    if origin is list:
        if not isinstance(value, list):
            raise _Mismatch(f"{where} is {_short(value)}, not a list")
        return [_value(args[0], item, f"{where}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _Mismatch(f"{where} is {_short(value)}, not an object")
        return {k: _value(args[1], item, f"{where}.{k}") for k, item in value.items()}
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    fits = {
        float: number,
        int: number and isinstance(value, int),
        bool: isinstance(value, bool),
        str: isinstance(value, str),
    }.get(kind)
    if fits is None:
        raise TypeError(f"the record layout uses {kind!r}, which _value does not read")  # a bug here, not in a file
    if not fits:
        raise _Mismatch(f"{where} is {_short(value)}, not {_name(kind)}")
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _name(kind: Any) -> str:
    return getattr(kind, "__name__", None) or str(kind).replace("typing.", "")


def _written_by(data: dict) -> str:
    code = data.get("code")
    version = code.get("version") if isinstance(code, dict) else None
    return f" (version {version})" if version else ""


def _unknown_schema(source: str | Path, schema: Any, data: dict) -> str:
    if schema is None:
        return f"{source} has no schema version, so it is not a run record grft wrote; delete it, or {FIX}"
    readable = ", ".join(str(s) for s in READABLE_SCHEMAS)
    return (
        f"{source} is a run record of schema {schema!r}, which this version of grft does not read (it reads "
        f"schema {readable}); render it with the version that wrote it{_written_by(data)}, or {FIX}"
    )
