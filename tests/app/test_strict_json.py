"""The strict JSON codec on a layout of its own (not the run record): renamed, kept-null and transient
fields, nested dataclasses, numbers kept as written, and a dotted key naming what does not fit."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from grft_app.strict_json import KEEP_NULL, TRANSIENT, Mismatch, from_json, to_json


@dataclass
class Inner:
    steps: int
    rate: float | None = None


@dataclass
class Outer:
    name: str
    class_: str | None = field(default=None, metadata={"key": "class", **KEEP_NULL})
    inner: list[Inner] = field(default_factory=list)
    extra: dict[str, int | str] | None = None
    where: Path | None = field(default=None, metadata=TRANSIENT)


def test_a_layout_round_trips_and_the_metadata_steers_the_keys():
    value = Outer(name="a", inner=[Inner(steps=3, rate=1)], extra={"x": 1, "y": "z"}, where=Path("/x"))
    data = to_json(value)
    assert data == {"name": "a", "class": None, "inner": [{"steps": 3, "rate": 1}], "extra": {"x": 1, "y": "z"}}
    back = from_json(Outer, data)
    assert back == Outer(name="a", inner=[Inner(steps=3, rate=1)], extra={"x": 1, "y": "z"})
    assert type(back.inner[0].rate) is int  # kept as written: the file written back is the same file
    assert to_json(back) == data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "a", "where": "/x"}, "unknown key where"),  # transient: never read
        ({"name": "a", "inner": [{"steps": True}]}, r"inner\[0\].steps is True, not int"),
        ({"name": "a", "inner": [{}]}, r"inner\[0\].steps is missing"),
        ({"name": "a", "extra": {"x": 1.5}}, r"extra.x is 1.5, not int \| str"),
        ({"name": 1}, "name is 1, not str"),
        ([], "the value is list, not an object"),
    ],
)
def test_what_does_not_fit_the_layout_is_named_by_its_dotted_key(data, message):
    with pytest.raises(Mismatch, match=message):
        from_json(Outer, data)
