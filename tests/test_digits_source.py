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


@pytest.mark.parametrize("override", ["model.source_epochs=1", "model.source_weights=train"])
def test_another_source_recipe_or_source_weights_train_is_pretrained_here(tmp_path, monkeypatch, override):
    import grft_app.data.digits as digits_data

    monkeypatch.setattr(digits_data, "source_dataset", no_pretraining)
    cfg = make_cfg(tmp_path / "runs", f"paths.cache={tmp_path / 'empty'}", override)
    with pytest.raises(AssertionError, match="pre-trained here"):
        digits.source_checkpoint(cfg.model)


def test_an_unknown_source_weights_value_is_an_error_naming_the_choices(tmp_path):
    cfg = make_cfg(tmp_path / "runs", "model.source_weights=downloaded")
    with pytest.raises(ValueError, match="use shipped or train"):
        digits.source_checkpoint(cfg.model)
