"""``run.py method=<name> debug=smoke`` for every method, through the real config and runner.

Each run composes the real Hydra config, trains the digits task for two batches on the CPU, and
must write a finished record with the method and its Params column; its checkpoint must hold only
what the method trains (plus GPS's masks). Unknown methods fail with the list of known ones.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import MissingConfigException

from grft_app.methods import METHODS
from grft_app.paths import CONF_DIR
from grft_app.run.runner import run_task
from grft_app.run.settings import register_resolvers

CONF = CONF_DIR


def smoke_config(name: str, runs: Path, *extra: str):
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(
            config_name="config",
            overrides=[f"method={name}", "debug=smoke", f"paths.runs={runs}", "logger=none", *extra],
        )


@pytest.mark.trains
@pytest.mark.parametrize("name", sorted(METHODS))
def test_smoke_run_writes_a_record_with_params(name, tmp_path):
    cfg = smoke_config(name, tmp_path)
    run_dir = tmp_path / name
    record = run_task(cfg, run_dir)
    assert record.done is True and record.method == name
    params = record.params
    assert 0 < params.trainable <= params.total
    assert params.pct == pytest.approx(100 * params.trainable / params.total)
    assert (name == "full") == (params.pct == 100.0)
    assert (run_dir / record.adapter_file).is_file()

    # Slim checkpoints: the model part holds what the method trains and nothing frozen.
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    kept = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    if name == "full":
        assert sum(v.numel() for v in kept.values()) == params.total
    elif name == "gps":  # full weights (sparsely trained), biases, head, and the masks
        masks = {k: v for k, v in kept.items() if k.endswith(".gps_mask")}
        assert (
            masks
            and sum(int(m.sum()) for m in masks.values())
            + sum(v.numel() for k, v in kept.items() if k.endswith(".bias") or k.startswith("head."))
            == params.trainable
        )
        assert not any("norm" in k or k in ("cls_token", "pos_embed") for k in kept)
    elif name != "grft":  # grft also keeps its index buffers and anchors (its own tests cover them)
        assert sum(v.numel() for v in kept.values()) == params.trainable


@pytest.mark.trains
def test_resumed_lora_run_restores_its_adapters(tmp_path):
    """A run whose record is gone resumes from its slim checkpoint; LoRA's keys must load back."""
    cfg = smoke_config("lora", tmp_path, "epochs=2", "trainer.limit_train_batches=1")
    run_dir = tmp_path / "lora"
    first = run_task(cfg, run_dir)
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    lora_keys = {k for k in ckpt if ".lora_" in k}
    assert lora_keys and all(k.startswith("model.") for k in lora_keys)
    (run_dir / "record.json").unlink()
    second = run_task(cfg, run_dir)
    assert second.resumed is True
    assert second.params == first.params


def test_unknown_method_lists_the_methods(tmp_path):
    with pytest.raises(MissingConfigException) as err:
        smoke_config("xyz", tmp_path)
    for name in METHODS:
        assert name in str(err.value)
