"""grft.io: tensors + JSON metadata in one safetensors file, written atomically with a new file's permissions."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from grft.io import UnreadableFile, load_tensors, read_metadata, save_tensors, write_json_atomic


def test_tensors_and_nested_metadata_round_trip(tmp_path):
    tensors = {"a": torch.arange(6, dtype=torch.int16).reshape(2, 3), "b": torch.randn(3, requires_grad=True)}
    meta = {"format": "x", "shapes": {"layer": [2, 3]}, "k": 2}
    path = save_tensors(tmp_path / "sub" / "f.safetensors", tensors, meta)
    assert path == tmp_path / "sub" / "f.safetensors"
    loaded = load_tensors(path)
    assert (
        set(loaded) == {"a", "b"} and torch.equal(loaded["a"], tensors["a"]) and torch.equal(loaded["b"], tensors["b"])
    )
    assert read_metadata(path, "x") == meta
    with safe_open(str(path), framework="pt") as f:  # the layout other tools (and older grft) read
        assert json.loads(f.metadata()["grft"]) == meta


def test_a_file_written_by_plain_safetensors_reads_the_same(tmp_path):
    """Files written before this module (``save_file`` with the JSON under "grft") still load."""
    path = tmp_path / "old.safetensors"
    save_file({"w": torch.ones(2)}, str(path), metadata={"grft": json.dumps({"format": "grft-gps", "head": "head"})})
    assert read_metadata(path, "grft-gps") == {"format": "grft-gps", "head": "head"}
    save_file({"w": torch.ones(2)}, str(path))
    assert read_metadata(path) == {}


def test_wrong_format_missing_and_damaged_files_are_named(tmp_path):
    path = save_tensors(tmp_path / "f.safetensors", {"w": torch.ones(4)}, {"format": "grft-lora"})
    with pytest.raises(ValueError, match=r"is not a GPS adapter .*'grft-lora'.*'grft-gps'"):
        read_metadata(path, "grft-gps", "GPS adapter")
    with pytest.raises(FileNotFoundError, match="no GPS adapter at"):
        read_metadata(tmp_path / "absent.safetensors", "grft-gps", "GPS adapter")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    for read in (read_metadata, load_tensors):
        with pytest.raises(UnreadableFile, match=f"{path}.*truncated or damaged"):
            read(path)


def test_new_files_get_the_umask_permissions_not_private_ones(tmp_path):
    mask = os.umask(0o022)
    try:
        a = save_tensors(tmp_path / "a.safetensors", {"w": torch.ones(1)})
        b = write_json_atomic(tmp_path / "b.json", {"x": 1})
    finally:
        os.umask(mask)
    for path in (a, b):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = write_json_atomic(tmp_path / "r.json", {"x": 1})
    shared = torch.ones(4)
    with pytest.raises(RuntimeError, match="share memory"):  # safetensors refuses while writing the file
        save_tensors(path, {"a": shared, "b": shared})
    assert json.loads(path.read_text()) == {"x": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
