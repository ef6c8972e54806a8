"""The embedded default's pre-trained source weights ship with the code, so every machine fine-tunes the same
model (pre-training on other vector kernels gives other weights); another source recipe is pre-trained here."""

from __future__ import annotations

import pytest

from grft_app.models import digits
from helpers.app_runs import make_cfg


def no_pretraining(*args, **kwargs):
    raise AssertionError("pre-trained here instead of using the shipped weights")


def test_the_default_recipe_loads_the_shipped_weights_without_pretraining(tmp_path, monkeypatch):
    import grft_app.data.digits as digits_data

    monkeypatch.setattr(digits_data, "source_dataset", no_pretraining)
    cfg = make_cfg(tmp_path / "runs", f"paths.cache={tmp_path / 'empty'}")
    path = digits.source_checkpoint(cfg.model)
    assert path.parent == digits.SHIPPED and path.is_file()
    assert not (tmp_path / "empty").exists()  # nothing trained, nothing cached


def test_another_source_recipe_is_pretrained_here(tmp_path, monkeypatch):
    import grft_app.data.digits as digits_data

    monkeypatch.setattr(digits_data, "source_dataset", no_pretraining)
    cfg = make_cfg(tmp_path / "runs", f"paths.cache={tmp_path / 'empty'}", "model.source_epochs=1")
    with pytest.raises(AssertionError, match="pre-trained here"):
        digits.source_checkpoint(cfg.model)
