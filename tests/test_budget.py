"""Equal budgets: ``k=auto share=<percent>`` is the largest k whose trainable share is at most the
percent, computed from the model's shapes; checked against a brute-force scan of k (each k counted
by ``param_report`` on ViT-B/16 built on the meta device), and end to end in the app."""

from __future__ import annotations

import pytest
import timm
import torch

from grft import GRFTConfig, detect_architecture, largest_k, param_report
from grft_app.lit.settings import ConfigError


def vit_b16(num_classes: int):
    with torch.device("meta"):
        model = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=num_classes)
    return model, detect_architecture(model)


def brute_force(model, arch, selection: str, share: float) -> int | None:
    """The largest k in 1..(smallest side) whose param_report share is at most ``share``; None if none is."""
    best = None
    for k in range(1, 769):
        try:
            percent = param_report(model, GRFTConfig(k=k, selection=selection), arch=arch).percent
        except ValueError:  # k larger than a matrix's side
            break
        if percent > share:
            break
        best = k
    return best


@pytest.mark.parametrize("num_classes", [47, 200])  # DTD (VTAB-1k), CUB (FGVC)
@pytest.mark.parametrize("selection", ["row", "column"])
def test_auto_k_is_the_largest_k_within_the_share_on_vit_b16(num_classes, selection):
    model, arch = vit_b16(num_classes)
    at_one = param_report(model, GRFTConfig(k=1, selection=selection), arch=arch).percent
    at_three = param_report(model, GRFTConfig(k=3, selection=selection), arch=arch).percent
    # Table 8's shares, the two exact boundaries k=1 and k=3, and just below/above them
    shares = [0.22, 0.26, 0.3, 0.47, 0.9, 1.22, 2.56, at_one, at_three, at_three - 1e-9, at_three + 1e-9]
    for share in shares:
        expected = brute_force(model, arch, selection, share)
        if expected is None:  # even k=1 trains more than the share (CUB's 200-class head)
            with pytest.raises(ValueError, match="raise share to at least"):
                largest_k(model, GRFTConfig(k=1, selection=selection), share, arch)
            continue
        found = largest_k(model, GRFTConfig(k=1, selection=selection), share, arch)
        assert found.k == expected, share
        assert found.percent == pytest.approx(
            param_report(model, GRFTConfig(k=found.k, selection=selection), arch=arch).percent
        )
        assert found.percent <= share


def test_a_share_below_k1_is_one_line_naming_the_share_k1_needs():
    model, arch = vit_b16(47)
    at_one = param_report(model, GRFTConfig(k=1, selection="row"), arch=arch).percent
    with pytest.raises(ValueError, match=rf"raise share to at least {at_one:.4f}") as err:
        largest_k(model, GRFTConfig(k=1, selection="row"), at_one * 0.99, arch)
    assert "\n" not in str(err.value)


def test_the_app_trains_and_records_the_k_of_the_share(tmp_path):
    from grft_app.models import build_model
    from helpers.app_runs import make_cfg, run

    cfg = make_cfg(tmp_path, "k=auto", "share=6")
    bundle = build_model(cfg.model, int(cfg.dataset.num_classes), pretrained=False, tiny=bool(cfg.model.get("tiny")))
    expected = brute_force(bundle.model, bundle.arch, "row", 6.0)
    record, _ = run(tmp_path, "k=auto", "share=6")
    assert record.k == record.budget.k == expected
    assert record.budget.share == 6.0 and record.config["k"] == "auto"
    assert record.budget.pct == pytest.approx(record.params.pct) and record.params.pct <= 6.0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["k=auto"], "k=auto needs share=<percent>"),
        (["share=0.3"], "sizes k only with k=auto"),
        (["k=auto", "share=0.0001"], "raise share to at least"),
        (["k=auto", "share=1", "method=linear"], "has no k"),
    ],
)
def test_bad_budgets_are_one_line_errors(tmp_path, overrides, message):
    from helpers.app_runs import run

    with pytest.raises(ConfigError, match=message):
        run(tmp_path, *overrides)
