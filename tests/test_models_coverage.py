"""GRFT on whatever model a user brings: the whole cycle on tiny random timm and transformers models.

The default run takes a fixed sample with one model per cause of failure the library once had
(``experiments.models_coverage`` runs the cycle: probe, attach, one Adam step, adapter save and
load, merge, rows and columns, each checked against the untouched base model); the slow test runs
every timm family and every transformers classifier and prints the table.
"""

from __future__ import annotations

import time

import pytest

from experiments.models_coverage import hf_zoo, timm_zoo
from experiments.models_coverage.cycle import verdict
from experiments.models_coverage.report import rate, summary, table, totals
from experiments.models_coverage.sweep import hf_models, sweep, timm_models

# cause -> a small model that had it. timm models are built by name (smallest variants need a search).
SAMPLE = {
    "vision model without input embeddings": ("transformers", "ResNetForImageClassification"),
    "audio model without input embeddings": ("transformers", "Wav2Vec2ForSequenceClassification"),
    "blocks of layers GRFT leaves out": ("transformers", "SqueezeBertForSequenceClassification"),
    "sliced output edited in place": ("transformers", "Swinv2ForImageClassification"),
    "blocks that extend a cache they are given": ("transformers", "XLMForSequenceClassification"),
    "Linear subclass computing the plain product": ("transformers", "FalconForSequenceClassification"),
    "classifier inside the base model": ("transformers", "PerceiverForSequenceClassification"),
    "BatchNorm inside the head": ("timm", "levit_128s"),
    "a container of heads": ("timm", "efficientvim_m1"),
}
REFUSED = {
    "reversible blocks": ("transformers", "ReformerForSequenceClassification", "custom autograd function"),
    "nothing to slice": ("transformers", "IBertForSequenceClassification", "QuantLinear is not a Linear"),
}


def build(library: str, name: str):
    return timm_zoo.build(name) if library == "timm" else hf_zoo.build(name)


@pytest.mark.parametrize("cause", list(SAMPLE))
def test_the_whole_cycle_passes_on_a_model_with_each_former_cause(cause):
    model, batch = build(*SAMPLE[cause])
    result = verdict(model, batch)
    assert result.status == "pass", result.reason


@pytest.mark.parametrize("cause", list(REFUSED))
def test_a_model_grft_cannot_slice_is_refused_in_one_line(cause):
    library, name, why = REFUSED[cause]
    model, batch = build(library, name)
    result = verdict(model, batch)
    assert result.status == "refused" and why in result.reason and "\n" not in result.reason


@pytest.mark.slow
def test_every_timm_family_and_transformers_classifier(tmp_path):
    start = time.perf_counter()
    rows = sweep(hf_models() + timm_models(), timeout=300, log=tmp_path / "coverage.jsonl")
    print("\n" + table(rows) + "\n\n" + summary(rows, time.perf_counter() - start))
    assert not [r for r in rows if r.status == "failed"]
    for library, counts in totals(rows).items():
        assert rate(counts) >= 97.0, f"{library}: {counts}"
