"""Dataclasses <-> JSON, strictly: a value that is not what the annotations say is an error, never a guess.

Generic over any tree of dataclasses whose fields are annotated with ``str``, ``int``, ``float``, ``bool``,
``Any``, ``list[...]``, ``dict[str, ...]``, unions of these (``X | None``) and other such dataclasses. The
run record (``grft_app.record``) is the one layout that uses it; the record's module keeps the layout and
its file, this one only how a layout is written and read.

Field metadata steers the JSON: ``key`` names the JSON key when it is not the field's name (``lambda``
is a Python keyword); ``keep_null`` writes the key even when the value is None (a layout where every
file lists the same keys); ``transient`` never writes nor reads the field (where a value was read from).
Reading keeps numbers as written (an ``int`` stays an ``int`` in a ``float`` field) so a file read and
written back is the same file.

Hand-written rather than a dependency: the standard library's ``dataclasses`` and ``typing`` give all
it needs, and the error it raises names the dotted key at fault (``launches[0].steps``), which the
record's one-line message passes on.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from pathlib import Path
from typing import Any, Union

KEEP_NULL = {"keep_null": True}  # written even when None
TRANSIENT = {"transient": True}  # never written, never read


class Mismatch(ValueError):
    """A value that is not what the layout says; the message is the dotted key and what was found."""


def to_json(value: Any) -> Any:
    """``value`` (a dataclass, or a dict, list, path or plain value holding them) as JSON-ready data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if f.metadata.get("transient") or (item is None and not f.metadata.get("keep_null")):
                continue
            out[_json_key(f)] = to_json(item)
        return out
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def from_json(cls: type, data: Any, where: str = "") -> Any:
    """An instance of the dataclass ``cls`` from ``data``; ``Mismatch`` on an unknown key, a missing required
    key or a value of the wrong type. ``where`` prefixes the keys it names (``"timings."`` inside a record)."""
    if not isinstance(data, dict):
        raise Mismatch(f"{where or 'the value'} is {type(data).__name__}, not an object")
    known = {_json_key(f): f for f in dataclasses.fields(cls) if not f.metadata.get("transient")}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise Mismatch(f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(where + k for k in unknown)}")
    values = {}
    for key, f in known.items():
        if key in data:
            values[f.name] = _value(_hints(cls)[f.name], data[key], where + key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise Mismatch(f"{where + key} is missing")
    return cls(**values)


def _json_key(f: dataclasses.Field) -> str:
    return f.metadata.get("key", f.name)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _value(kind: Any, value: Any, where: str) -> Any:
    """``value`` checked against the annotation ``kind`` (dataclasses built, numbers kept as written)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any:
        return value
    if origin in (Union, types.UnionType):
        return _union(kind, args, value, where)
    if dataclasses.is_dataclass(kind):
        return from_json(kind, value, f"{where}.")
    if origin is list:
        if not isinstance(value, list):
            raise Mismatch(f"{where} is {_short(value)}, not a list")
        return [_value(args[0], item, f"{where}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise Mismatch(f"{where} is {_short(value)}, not an object")
        return {k: _value(args[1], item, f"{where}.{k}") for k, item in value.items()}
    return _plain(kind, value, where)


def _union(kind: Any, args: tuple, value: Any, where: str) -> Any:
    """The first option of ``X | Y | None`` that ``value`` fits."""
    if value is None and type(None) in args:
        return None
    options = [a for a in args if a is not type(None)]
    if len(options) == 1:
        return _value(options[0], value, where)
    for arg in options:
        try:
            return _value(arg, value, where)
        except Mismatch:
            continue
    raise Mismatch(f"{where} is {_short(value)}, not {_name(kind)}")


def _plain(kind: Any, value: Any, where: str) -> Any:
    """A JSON scalar of type ``kind``; a bool is never a number, an int is a float."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    fits = {
        float: number,
        int: number and isinstance(value, int),
        bool: isinstance(value, bool),
        str: isinstance(value, str),
    }.get(kind)
    if fits is None:
        raise TypeError(f"a layout uses {kind!r}, which strict_json does not read")  # a bug in the layout, not a file
    if not fits:
        raise Mismatch(f"{where} is {_short(value)}, not {_name(kind)}")
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _name(kind: Any) -> str:
    return getattr(kind, "__name__", None) or str(kind).replace("typing.", "")
