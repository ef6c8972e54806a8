"""GRFT on the models users bring: tiny random timm and transformers classifiers of every family.

For each family and for rows and columns, the whole life of a tuned model is checked against the
untouched base model (the independent reference): outputs unchanged right after ``attach``; after
one Adam step only the selected slices of eligible weights, eligible biases and the head differ
from the base; the adapter file rebuilds the same model on a fresh copy; ``merge`` gives plain
layers with the base's state-dict keys and the same outputs.
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch
import torch.nn.functional as F

import grft
from grft.targets import detect_architecture, eligible_layers, in_prefixes
from grft_app.models import hf, timm_classifier
from grft_app.paths import CONF_DIR

NUM_CLASSES = 3
TIMM = {
    "vit": "vit_base_patch16_224",
    "deit": "deit_tiny_patch16_224",
    "eva": "eva02_tiny_patch14_224",
    "swin": "swin_tiny_patch4_window7_224",
    "convnext": "convnext_atto",
    "resnet": "resnet50",
    "efficientnet": "efficientnet_b0",
}
HF = ("llama", "qwen2", "mistral", "gemma", "bert", "roberta", "distilbert", "deberta-v2", "gpt2", "vit")
FAMILIES = [f"timm-{f}" for f in TIMM] + [f"hf-{t}" for t in HF]
# What each family's head is: nested heads train whole, DistilBERT/DeBERTa heads are two modules.
HEADS = {
    "timm-swin": "head.fc",
    "timm-convnext": "head.fc",
    "timm-resnet": "fc",
    "timm-efficientnet": "classifier",
    "hf-llama": "score",
    "hf-qwen2": "score",
    "hf-mistral": "score",
    "hf-gemma": "score",
    "hf-gpt2": "score",
    "hf-bert": "classifier",
    "hf-roberta": "classifier",
    "hf-vit": "classifier",
    "hf-distilbert": ("pre_classifier", "classifier"),
    "hf-deberta-v2": ("pooler", "classifier"),
}


def build(family: str):
    """A tiny random model and a labelled batch for it (labels repeat: the SCL probe needs pairs).

    Built once per family (rows and columns share it); every caller gets its own copy.
    """
    model, batch = _build(family)
    return copy.deepcopy(model), batch


@functools.cache
def _build(family: str):
    torch.manual_seed(0)
    source, name = family.split("-", 1)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    if source == "timm":
        model = timm_classifier.tiny_model(TIMM[name], NUM_CLASSES)
        return model, (torch.randn(6, 3, 32, 32), labels)
    model = hf.tiny_model(name, NUM_CLASSES)
    if hf.is_vision(name):
        return model, (torch.randn(6, 3, 32, 32), labels)
    ids = torch.randint(3, model.config.vocab_size, (6, 10))
    mask = torch.ones_like(ids)
    mask[::2, 7:] = 0  # right padding, as the app's tokenizers pad
    ids[mask == 0] = model.config.pad_token_id
    return model, {"input_ids": ids, "attention_mask": mask, "labels": labels}


def logits(model, batch):
    inputs = batch[0] if isinstance(batch, tuple) else {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        out = model(**inputs) if isinstance(inputs, dict) else model(inputs)
    return out.logits if hasattr(out, "logits") else out


def out_in(layer, weight: torch.Tensor) -> torch.Tensor:
    """``weight`` as ``[out, in]``, written here independently of grft: Conv1D stores ``[in, out]``."""
    from transformers.pytorch_utils import Conv1D

    return weight.t() if isinstance(layer, Conv1D) else weight.reshape(weight.shape[0], -1)


def changed_lines(before: torch.Tensor, after: torch.Tensor, dim: int) -> set[int]:
    """Rows (dim=1 summed away) or columns of the [out, in] matrix where anything differs."""
    return set(torch.nonzero((after != before).any(dim=dim)).flatten().tolist())


@pytest.mark.parametrize("selection", ["row", "column"])
@pytest.mark.parametrize("family", FAMILIES)
def test_grft_life_cycle_on_every_family(family, selection, tmp_path):
    model, batch = build(family)
    model.eval()  # no dropout, no BatchNorm statistics updates: every difference comes from the step
    base = copy.deepcopy(model)
    arch = detect_architecture(model)
    if family in HEADS:
        assert arch.head == HEADS[family]
    layers = eligible_layers(model, arch)
    expected = logits(base, batch)

    config = grft.GRFTConfig(k=2, selection=selection, norm="l2", lam=1e-3, regular_layers=1)
    sel = grft.select(model, [batch], config)
    grft.attach(model, sel, config)
    torch.testing.assert_close(logits(model, batch), expected, rtol=0, atol=1e-6)

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=1e-2)
    loss = F.cross_entropy(logits_with_grad(model, batch), batch[1] if isinstance(batch, tuple) else batch["labels"])
    (loss + grft.penalty(model)).backward()
    optimizer.step()
    tuned = logits(model, batch)

    path = grft.save_adapter(model, tmp_path / "adapter.safetensors")
    fresh = grft.load_adapter(copy.deepcopy(base), path)
    torch.testing.assert_close(logits(fresh, batch), tuned, rtol=0, atol=1e-6)

    grft.merge(model)
    assert not any(isinstance(m, grft.SlicedLayer) for m in model.modules())
    merged = model.state_dict()
    assert list(merged) == list(base.state_dict())
    for name, layer in layers.items():  # plain layers of the original types again
        assert type(model.get_submodule(name)) is type(layer)
    torch.testing.assert_close(logits(model, batch), tuned, rtol=0, atol=1e-6)

    dim = 1 if selection == "row" else 0
    moved_slices = 0
    for key, before in base.state_dict().items():
        owner, _, leaf = key.rpartition(".")
        after = merged[key]
        if in_prefixes(owner, list(arch.heads)):
            continue  # the head trains in full
        if owner in layers and leaf == "bias":
            continue  # eligible biases train in full
        if owner in layers and leaf == "weight":
            layer = base.get_submodule(owner)
            lines = changed_lines(out_in(layer, before), out_in(layer, after), dim)
            assert lines <= set(sel[owner].index.tolist()), f"{owner}: changed outside its selected {selection}s"
            moved_slices += len(lines)
            continue
        assert torch.equal(before, after), f"{key} is not trainable but changed"
    assert moved_slices > 0
    for head in arch.heads:  # every head module (nested ones too) trained
        head_before = dict(base.get_submodule(head).named_parameters())
        for pname, p in model.get_submodule(head).named_parameters():
            assert not torch.equal(p, head_before[pname]), f"head parameter {head}.{pname} did not train"


def logits_with_grad(model, batch):
    inputs = batch[0] if isinstance(batch, tuple) else {k: v for k, v in batch.items() if k != "labels"}
    out = model(**inputs) if isinstance(inputs, dict) else model(inputs)
    return out.logits if hasattr(out, "logits") else out


# --- the pieces, one by one ---------------------------------------------------------------------
def test_conv1d_row_is_an_output_neuron_as_for_linear():
    """A Conv1D (weight [in, out]) sliced by rows trains the same output neurons as the equal Linear."""
    from transformers.pytorch_utils import Conv1D

    from grft.layers import make_sliced

    torch.manual_seed(0)
    conv = Conv1D(6, 4)  # nf=6 outputs, nx=4 inputs
    conv.bias.data.normal_()
    linear = torch.nn.Linear(4, 6)
    linear.weight.data.copy_(conv.weight.data.t())
    linear.bias.data.copy_(conv.bias.data)
    x = torch.randn(3, 5, 4)
    for kind, index in (("row", torch.tensor([1, 4])), ("column", torch.tensor([0, 3]))):
        a, b = make_sliced(copy.deepcopy(conv), kind, 2, index), make_sliced(copy.deepcopy(linear), kind, 2, index)
        delta = torch.randn_like(a.grft_delta)
        a.grft_delta.data.copy_(delta)
        b.grft_delta.data.copy_(delta)
        ya, yb = a(x), b(x)
        torch.testing.assert_close(ya, yb)
        ya.square().sum().backward()
        yb.square().sum().backward()
        torch.testing.assert_close(a.grft_delta.grad, b.grft_delta.grad)
        plain = a.unwrap()
        assert type(plain) is Conv1D and plain.weight.shape == (4, 6)
        torch.testing.assert_close(plain(x), yb.detach())


def test_target_and_exclude_modules_follow_peft_rules():
    model, _ = build("hf-llama")
    arch = detect_architecture(model)
    every = set(eligible_layers(model, arch))
    names = set(eligible_layers(model, arch, grft.GRFTConfig(target_modules=["q_proj", "v_proj"])))
    assert names == {n for n in every if n.endswith((".q_proj", ".v_proj"))} and len(names) == 4
    regex = set(eligible_layers(model, arch, grft.GRFTConfig(target_modules=r".*\.1\.mlp\..*")))
    assert regex == {f"model.layers.1.mlp.{m}" for m in ("gate_proj", "up_proj", "down_proj")}
    kept = set(eligible_layers(model, arch, grft.GRFTConfig(exclude_modules=["down_proj"])))
    assert kept == {n for n in every if not n.endswith("down_proj")}
    config = grft.GRFTConfig(k=1, target_modules=["q_proj"])
    grft.attach(model, None, config)
    assert set(grft.sliced_layers(model)) == {"model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj"}
    report = grft.param_report(model)
    assert report.left_out["model.layers.0.mlp.up_proj"] == "excluded by exclude_modules/target_modules"


def test_target_modules_that_match_nothing_or_a_depthwise_conv_are_refused():
    model, _ = build("timm-convnext")
    arch = detect_architecture(model)
    with pytest.raises(ValueError, match="matches no Linear"):
        eligible_layers(model, arch, grft.GRFTConfig(target_modules=["nowhere"]))
    with pytest.raises(ValueError, match=r"conv_dw, which GRFT cannot slice: grouped/depthwise Conv2d"):
        eligible_layers(model, arch, grft.GRFTConfig(target_modules=["conv_dw", "fc1"]))
    with pytest.raises(ValueError, match="not a valid regular expression"):
        grft.GRFTConfig(target_modules="(")


def test_param_report_names_every_layer_it_leaves_out_and_why():
    import timm

    model, _ = build("timm-convnext")
    report = grft.param_report(model, grft.GRFTConfig(k=1))
    depthwise = {n for n in report.left_out if n.endswith("conv_dw")}
    assert depthwise == {n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1}
    assert all("grouped/depthwise Conv2d" in report.left_out[n] for n in depthwise)
    # Layers whose forward is not the plain product are never sliced: slicing would change them.
    same = timm.layers.Conv2dSame(3, 4, 3)
    std = timm.layers.StdConv2d(3, 4, 3)
    assert "overrides Conv2d.forward" in grft.targets.ineligible_reason(same)
    assert "overrides Conv2d.forward" in grft.targets.ineligible_reason(std)
    assert not grft.targets.is_eligible(same) and not grft.targets.is_eligible(std)


def test_vit_b16_default_eligible_set_is_the_papers():
    import timm

    with torch.device("meta"):
        model = timm.create_model("vit_base_patch16_224", num_classes=100)
    arch = detect_architecture(model)
    expected = {"patch_embed.proj"} | {
        f"blocks.{i}.{m}" for i in range(12) for m in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")
    }
    assert arch.head == "head" and arch.blocks == "blocks" and set(eligible_layers(model, arch)) == expected


def test_regular_layers_count_blocks_across_stages():
    model, _ = build("timm-swin")
    grft.attach(model, None, grft.GRFTConfig(k=1, regular_layers=1))
    assert model.grft_state.regular == ["layers.1.blocks.0", "patch_embed.proj", "head.fc"]
    model, _ = build("hf-distilbert")
    grft.attach(model, None, grft.GRFTConfig(k=1, regular_layers=2))
    assert model.grft_state.regular == [
        "distilbert.transformer.layer.0",
        "distilbert.transformer.layer.1",
        "pre_classifier",
        "classifier",
    ]


# --- the app's families -------------------------------------------------------------------------
def test_hf_family_loads_a_local_directory_with_a_new_head(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from grft_app.models import build_model
    from grft_app.models.llama import tiny_tokenizer

    tok = tiny_tokenizer()
    torch.manual_seed(1)
    causal = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=16, n_layer=2, n_head=2, n_positions=64))
    causal.save_pretrained(tmp_path / "gpt2")
    tok.pad_token = None
    tok.save_pretrained(tmp_path / "gpt2")
    bundle = build_model({"family": "hf", "name": str(tmp_path / "gpt2")}, 4, pretrained=True)
    model = bundle.model
    torch.testing.assert_close(model.transformer.h[1].mlp.c_fc.weight, causal.transformer.h[1].mlp.c_fc.weight)
    assert model.score.weight.shape == (4, 16) and bundle.arch.head == "score"
    assert bundle.inputs.kind == "text" and bundle.inputs.tokenizer.pad_token == bundle.inputs.tokenizer.eos_token
    assert model.config.pad_token_id == bundle.inputs.tokenizer.eos_token_id


def test_timm_family_reads_a_local_checkpoint_and_its_pretrained_config(tmp_path):
    import timm
    from safetensors.torch import save_file

    from grft_app.models import build_model

    torch.manual_seed(2)
    kwargs = {"depths": [1, 1, 1, 1], "dims": [8, 16, 16, 16]}
    source = timm.create_model("convnext_atto", pretrained=False, num_classes=10, **kwargs)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "c.safetensors"))
    cfg = {"family": "timm", "name": "convnext_atto", "checkpoint": str(tmp_path / "c.safetensors"), "kwargs": kwargs}
    bundle = build_model(cfg, 5, pretrained=True)
    torch.testing.assert_close(
        bundle.model.stages[1].blocks[0].mlp.fc1.weight, source.stages[1].blocks[0].mlp.fc1.weight
    )
    assert bundle.model.get_classifier().out_features == 5 and bundle.arch.head == "head.fc"
    assert bundle.inputs.mean == tuple(source.pretrained_cfg["mean"]) and bundle.inputs.img_size == 224


def test_hf_smoke_without_files_needs_the_model_type():
    from grft_app.models import build_model

    with pytest.raises(ValueError, match="model.model_type"):
        build_model({"family": "hf", "name": "someone/unknown-model"}, 2, tiny=True)


@pytest.mark.parametrize(
    "task,overrides",
    [
        ("eurosat", ["model=timm", "model.name=convnext_atto.d2_in1k"]),
        ("eurosat", ["model=hf", "model.name=google/vit-base-patch16-224-in21k", "model.model_type=vit"]),
        ("rte", ["model=hf", "model.name=openai-community/gpt2", "model.model_type=gpt2"]),
    ],
)
def test_app_smoke_run_on_a_model_the_user_names(tmp_path, task, overrides):
    """``model=timm|hf model.name=...`` with ``debug=smoke``: a tiny random model of that family, end to end."""

    from hydra import compose, initialize_config_dir

    from grft_app.lit.app import run_dir_of
    from grft_app.lit.runner import run_task
    from grft_app.lit.settings import register_resolvers
    from helpers.miniature import write_glue, write_vtab

    register_resolvers()
    if task == "eurosat":
        write_vtab(tmp_path / "data", "eurosat", num_classes=10)
    else:
        write_glue(tmp_path / "data", task)
    conf = CONF_DIR
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                f"dataset={task}",
                *overrides,
                "debug=smoke",
                f"paths.runs={tmp_path / 'runs'}",
                f"data_dir={tmp_path / 'data'}",
                "baselines=[]",
                "k=1",
            ],
        )
    record = run_task(cfg, run_dir_of(cfg))
    assert record.done and 0.0 <= record.metrics["test_acc"] <= 1.0 and record.params.trainable > 0


def test_batchnorm_statistics_moved_in_train_mode_travel_in_the_adapter(tmp_path):
    model, (x, y) = build("timm-resnet")
    base = copy.deepcopy(model)
    config = grft.GRFTConfig(k=1)
    grft.attach(model, grft.select(model, [(x, y)], config), config)
    model.train()
    F.cross_entropy(model(x), y).backward()  # train mode: BatchNorm running statistics move
    model.eval()
    fresh = grft.load_adapter(copy.deepcopy(base).eval(), grft.save_adapter(model, tmp_path / "a.safetensors"))
    assert not torch.equal(model.bn1.running_mean, base.bn1.running_mean)
    torch.testing.assert_close(logits(fresh, (x, y)), logits(model, (x, y)), rtol=0, atol=1e-6)


# --- models that once broke the cycle -----------------------------------------------------------
class _Blocks(torch.nn.Module):
    """Blocks in a list, a head: ``cache`` is a list every block reads and extends (like a key/value
    cache or RDNet's feature list), ``x`` only tensors."""

    def __init__(self, extend_cache: bool, head: torch.nn.Module | None = None):
        super().__init__()
        torch.manual_seed(0)
        self.blocks = torch.nn.ModuleList(_Block(extend_cache) for _ in range(3))
        self.head = head or torch.nn.Linear(8, 3)

    def forward(self, x):
        cache: list[torch.Tensor] = []
        for block in self.blocks:
            x = block(x, cache) if block.extend_cache else block(x)
        return self.head(x.mean(1))


class _Block(torch.nn.Module):
    def __init__(self, extend_cache: bool):
        super().__init__()
        self.extend_cache = extend_cache
        self.fc = torch.nn.Linear(8, 8)

    def forward(self, x, cache=None):
        y = torch.tanh(self.fc(x))
        if cache is not None:
            y = y + sum(cache) if cache else y  # a replay that sees the extended cache computes something else
            cache.append(y)
        return x + y


ARCH = grft.Architecture(head="head", blocks="blocks")


def _toy_batch():
    g = torch.Generator().manual_seed(1)
    return (torch.randn(6, 5, 8, generator=g), torch.tensor([0, 1, 2, 0, 1, 2]))


@pytest.mark.parametrize("extend_cache", [False, True])
def test_low_memory_probe_runs_a_block_plainly_where_checkpointing_cannot_replay_it(extend_cache):
    config = grft.GRFTConfig(k=1)
    model, batch = _Blocks(extend_cache), _toy_batch()
    plain = grft.accumulate_gradients(copy.deepcopy(model), [batch], config, arch=ARCH, low_memory=False)
    low = grft.accumulate_gradients(model, [batch], config, arch=ARCH, low_memory=True)
    for name in plain:  # the same gradients, bit for bit
        assert torch.equal(plain[name], low[name]), name
    ways = grft.param_report(model, config, ARCH).probe_blocks
    assert ways["blocks.2"].startswith("plain: the last block")
    if extend_cache:
        assert all("called with argument 1 (list)" in ways[f"blocks.{i}"] for i in (0, 1))
    else:
        assert ways["blocks.0"] == ways["blocks.1"] == "checkpointed"


def test_a_sliced_output_can_be_edited_in_place():
    """Swin-V2 scales a projection's output in place; the slice's gradient is still the dense one's rows."""
    from grft.layers import make_sliced

    torch.manual_seed(0)
    dense = torch.nn.Linear(4, 6)
    x = torch.randn(2, 3, 4)
    sliced = make_sliced(copy.deepcopy(dense), "row", 2, torch.tensor([1, 4]))
    y = sliced(x)
    y.mul_(2.0)
    y.square().sum().backward()
    reference = dense(x) * 2.0
    reference.square().sum().backward()
    torch.testing.assert_close(sliced.grft_delta.grad, dense.weight.grad[[1, 4]])


def test_a_linear_subclass_is_sliced_when_its_forward_is_the_plain_product():
    class Plain(torch.nn.Linear):  # transformers' FalconLinear
        def forward(self, x):
            return x @ self.weight.T + self.bias

    class Scaled(torch.nn.Linear):
        def forward(self, x):
            return 2 * super().forward(x)

    assert grft.targets.is_eligible(Plain(4, 3))
    assert "overrides Linear.forward" in grft.targets.ineligible_reason(Scaled(4, 3))
    with torch.device("meta"):  # nothing to ask on the meta device: left out
        assert not grft.targets.is_eligible(Plain(4, 3))


def test_a_batchnorm_in_the_head_travels_in_the_adapter(tmp_path):
    head = torch.nn.Sequential(torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 3))
    model, batch = _Blocks(False, head).eval(), _toy_batch()
    base = copy.deepcopy(model)
    config = grft.GRFTConfig(k=1)
    grft.attach(model, grft.select(model, [batch], config, arch=ARCH), config, ARCH)
    model.train()
    F.cross_entropy(model(batch[0]), batch[1]).backward()  # moves the head's BatchNorm statistics
    model.eval()
    path = grft.save_adapter(model, tmp_path / "a.safetensors")
    fresh = grft.load_adapter(copy.deepcopy(base), path, arch=ARCH)
    assert not torch.equal(fresh.head[0].running_mean, base.head[0].running_mean)
    torch.testing.assert_close(fresh(batch[0]), model(batch[0]), rtol=0, atol=1e-6)


def test_without_a_block_list_regular_layers_must_be_all_or_zero():
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    arch = grft.Architecture(head="2", blocks=())
    with pytest.raises(ValueError, match=r"found no list of blocks in Sequential: use regular_layers='all' or 0"):
        grft.attach(copy.deepcopy(model), None, grft.GRFTConfig(k=1, regular_layers=1), arch)
    for regular in ("all", 0):
        tuned = grft.attach(copy.deepcopy(model), None, grft.GRFTConfig(k=1, regular_layers=regular), arch)
        assert set(grft.sliced_layers(tuned)) == {"0"}


def test_a_timm_container_of_heads_is_opened_into_its_heads():
    import timm

    with torch.device("meta"):
        model = timm.create_model("crossvit_tiny_240", num_classes=3)
    arch = detect_architecture(model)
    assert arch.head == ("head.0", "head.1")
