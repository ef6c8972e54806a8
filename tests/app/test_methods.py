"""Every baseline method: what trains, what one training run changes, the Params column, and the
forward it computes, each against expectations built independently of the method's code.

- Trainable sets are listed from the module tree of an untouched copy of the model.
- Two Adam steps change exactly the trainable tensors (bit-for-bit compare of the state dict);
  two because LoRA's B and the adapters' up-projection start at zero, so their partner matrix
  gets its first gradient on the second step.
- Params: trainable entries counted by hand / parameters of the untouched model.
- Forward: float64 references written out from the timm modules (prompts, adapters), or the
  method folded into plain weights (LoRA: ``W + alpha/r B A``; SSF: ``diag(s) W``, ``s b + t``).
"""

from __future__ import annotations

import copy
from dataclasses import fields

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from grft.architecture import detect_architecture
from grft.probe import call_model
from grft_app.methods import METHODS, MethodSettings, make_method, method_class
from grft_app.methods.adapter import AdapterConfig
from grft_app.methods.lora import LoRAConfig, load_lora
from grft_app.methods.vpt import PromptConfig
from grft_app.models import ModelBundle
from helpers.models import image_batches, make_tiny_llama, make_tiny_vit

CONF = "conf/method"
HEAD = {"head.weight", "head.bias"}
VIT_METHODS = ("full", "linear", "bias", "lora", "gps", "adapter", "vpt_shallow", "vpt_deep", "ssf")


def prepare(name: str, model: nn.Module, **options):
    method = make_method(MethodSettings(name=name, options=options))
    tuned = method.prepare(ModelBundle(model, detect_architecture(model), None))
    if method.needs_probe(tuned):
        tuned.train()
        method.probe(tuned, probe_batches(tuned))
    return method, tuned


def probe_batches(model):
    if hasattr(model, "config"):
        return llama_batches()
    return image_batches(n_batches=2, batch=6, views=2, dtype=next(model.parameters()).dtype)


def llama_batches(n_batches: int = 2, batch: int = 8, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    return [
        {
            "input_ids": torch.randint(1, 64, (batch, 6), generator=g),
            "attention_mask": torch.ones(batch, 6, dtype=torch.long),
            "labels": torch.randint(0, 3, (batch,), generator=g),
        }
        for _ in range(n_batches)
    ]


def train_batch(model):
    if hasattr(model, "config"):
        batch = llama_batches(1, seed=9)[0]
        return {k: v for k, v in batch.items() if k != "labels"}, batch["labels"]
    return image_batches(n_batches=1, batch=6, seed=9, dtype=next(model.parameters()).dtype)[0]


def train_steps(method, model, steps: int = 2, lr: float = 1e-2):
    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    x, y = train_batch(model)
    for _ in range(steps):
        out = call_model(model, x)
        logits = out.logits if hasattr(out, "logits") else out
        loss = F.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        method.before_optimizer_step(model)
        opt.step()
    return opt


def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def changed(before: dict, after: dict) -> set[str]:
    assert before.keys() == after.keys()
    return {k for k in before if not torch.equal(before[k], after[k])}


def trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


# --- expected trainable sets, from the module tree of an untouched model ---------------------------
def modules_of(model, *types) -> list[str]:
    return [n for n, m in model.named_modules() if n and isinstance(m, types) and not n.startswith("head")]


def expected_trainable(name: str, base: nn.Module, **options) -> set[str]:
    if name == "full":
        return {n for n, _ in base.named_parameters()}
    if name == "linear":
        return set(HEAD)
    if name == "bias":
        return {
            f"{n}.bias" for n, m in base.named_modules() if isinstance(getattr(m, "bias", None), nn.Parameter)
        } | HEAD
    if name == "lora":
        return {
            f"{n}.lora_{ab}.default.weight" for n in modules_of(base, nn.Linear) if n.endswith(".qkv") for ab in "AB"
        } | HEAD
    if name == "gps":
        return {f"{n}.{p}" for n in modules_of(base, nn.Linear, nn.Conv2d) for p in ("weight", "bias")} | HEAD
    if name == "adapter":
        subs = ("mlp",) if options.get("placement") == "pfeiffer" else ("attn", "mlp")
        return {
            f"blocks.{i}.{s}.adapter.{layer}.{p}"
            for i in range(len(base.blocks))
            for s in subs
            for layer in ("down", "up")
            for p in ("weight", "bias")
        } | HEAD
    if name in ("vpt_shallow", "vpt_deep"):
        return {"vpt.tokens"} | HEAD
    if name == "ssf":
        return {
            f"{n}.ssf.{p}" for n in modules_of(base, nn.Linear, nn.Conv2d, nn.LayerNorm) for p in ("scale", "shift")
        } | HEAD
    raise AssertionError(name)


def expected_trainable_count(name: str, base: nn.Module, k: int = 1, **options) -> int:
    params = dict(base.named_parameters())
    if name == "gps":
        count = sum(
            p.numel() for n, p in params.items() if n.startswith("head.") or n.endswith(".bias") and "norm" not in n
        )
        for n in modules_of(base, nn.Linear, nn.Conv2d):
            count += params[f"{n}.weight"].shape[0] * k  # k entries in each row (output neuron)
        return count
    if name == "lora":
        r = options.get("r", 8)
        return (
            sum(r * (m.in_features + m.out_features) for n, m in base.named_modules() if n.endswith(".qkv"))
            + 5 * 24
            + 5
        )
    if name == "adapter":
        b = options.get("bottleneck", 8)
        per = 2 * 24 * b + b + 24
        return per * len(base.blocks) * (1 if options.get("placement") == "pfeiffer" else 2) + 5 * 24 + 5
    if name in ("vpt_shallow", "vpt_deep"):
        n = options.get("length", 10)
        return (len(base.blocks) if name == "vpt_deep" else 1) * n * 24 + 5 * 24 + 5
    if name == "ssf":
        feats = 0
        for _, m in base.named_modules():
            if isinstance(m, nn.Linear) and m is not base.head:
                feats += m.out_features
            elif isinstance(m, nn.Conv2d):
                feats += m.out_channels
            elif isinstance(m, nn.LayerNorm):
                feats += m.normalized_shape[0]
        return 2 * feats + 5 * 24 + 5
    return sum(params[n].numel() for n in expected_trainable(name, base, **options))


CASES = [
    ("full", {}),
    ("linear", {}),
    ("bias", {}),
    ("lora", {}),
    ("lora", {"r": 2, "alpha": 4}),
    ("gps", {}),
    ("adapter", {}),
    ("adapter", {"bottleneck": 3, "placement": "pfeiffer"}),
    ("vpt_shallow", {}),
    ("vpt_deep", {"length": 3}),
    ("ssf", {}),
]


@pytest.mark.parametrize("name,options", CASES)
def test_vit_trainable_set_steps_and_params(name, options):
    base = make_tiny_vit()
    method, model = prepare(name, copy.deepcopy(base), **options)
    expected = expected_trainable(name, base, **options)
    assert trainable(model) == expected

    # Params: entries the method updates / parameters of the untouched model (head included).
    report = method.param_report(model)
    assert report.total == sum(p.numel() for p in base.parameters())
    assert report.trainable == expected_trainable_count(name, base, **options)
    assert report.percent == pytest.approx(100 * report.trainable / report.total)

    before = snapshot(model)
    train_steps(method, model)
    moved = changed(before, snapshot(model))
    assert moved == expected, (
        f"changed but frozen: {sorted(moved - expected)[:5]}; trainable but unchanged: {sorted(expected - moved)[:5]}"
    )


@pytest.mark.parametrize("name", ["adapter", "vpt_shallow", "vpt_deep", "ssf", "bias", "gps"])
def test_pretrained_parameter_names_are_kept(name):
    """Adapters, prompts and SSF hang off hooks: every pre-trained tensor keeps its name."""
    base = make_tiny_vit()
    _, model = prepare(name, copy.deepcopy(base))
    assert {n for n, _ in base.named_parameters()} <= {n for n, _ in model.named_parameters()}


@pytest.mark.parametrize("name,options", [("lora", {}), ("adapter", {}), ("adapter", {"placement": "pfeiffer"})])
def test_zero_initialised_methods_start_as_the_pretrained_model(name, options):
    base = make_tiny_vit(dtype=torch.float64).eval()
    _, model = prepare(name, copy.deepcopy(base), **options)
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    torch.testing.assert_close(model.eval()(x), base(x), rtol=0, atol=0)


def randomise(params, std=0.3, seed=5):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)


# --- forward against independent references ---------------------------------------------------------
def test_lora_equals_merged_weights():
    base = make_tiny_vit(dtype=torch.float64).eval()
    r, alpha = 2, 6.0
    _, model = prepare("lora", copy.deepcopy(base), r=r, alpha=alpha)
    randomise([p for n, p in model.named_parameters() if "lora_" in n])
    merged = copy.deepcopy(base)
    with torch.no_grad():
        for i, block in enumerate(merged.blocks):
            qkv = model.blocks[i].attn.qkv
            a, b = qkv.lora_A["default"].weight, qkv.lora_B["default"].weight  # [r, in], [out, r]
            block.attn.qkv.weight += (alpha / r) * b @ a
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    torch.testing.assert_close(model.eval()(x), merged(x), rtol=1e-10, atol=1e-10)


def test_ssf_equals_scale_and_shift_folded_into_the_weights():
    base = make_tiny_vit(dtype=torch.float64).eval()
    _, model = prepare("ssf", copy.deepcopy(base))
    folded = copy.deepcopy(base)
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, m in folded.named_modules():
            if not isinstance(m, (nn.Linear, nn.Conv2d, nn.LayerNorm)) or name == "head":
                continue
            s, t = modules[name].ssf.scale, modules[name].ssf.shift
            shape = (-1,) + (1,) * (m.weight.dim() - 1)
            m.weight.mul_(s.view(shape))
            m.bias.mul_(s).add_(t)
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    torch.testing.assert_close(model.eval()(x), folded(x), rtol=1e-10, atol=1e-10)


def reference_blocks(base, x, block_fn):
    t = base.norm_pre(base._pos_embed(base.patch_embed(x)))
    t = block_fn(t)
    return base.forward_head(base.norm(t))


@pytest.mark.parametrize("placement", ["houlsby", "pfeiffer"])
def test_adapter_forward_matches_a_hand_written_block(placement):
    base = make_tiny_vit(dtype=torch.float64).eval()
    _, model = prepare("adapter", copy.deepcopy(base), placement=placement)
    randomise([p for n, p in model.named_parameters() if ".adapter." in n])

    def blocks(t):
        for i, blk in enumerate(base.blocks):
            h = blk.attn(blk.norm1(t))
            if placement == "houlsby":
                a = model.blocks[i].attn.adapter
                h = h + a.up(F.gelu(a.down(h)))
            t = t + h
            h = blk.mlp(blk.norm2(t))
            a = model.blocks[i].mlp.adapter
            t = t + h + a.up(F.gelu(a.down(h)))
        return t

    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    torch.testing.assert_close(model.eval()(x), reference_blocks(base, x, blocks), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("deep", [False, True])
def test_vpt_forward_matches_hand_written_prompt_insertion(deep):
    base = make_tiny_vit(dtype=torch.float64).eval()
    n = 4
    _, model = prepare("vpt_deep" if deep else "vpt_shallow", copy.deepcopy(base), length=n)
    prompts = model.vpt.tokens.detach()
    assert prompts.shape == (len(base.blocks) if deep else 1, n, base.embed_dim)

    def blocks(t):
        batch = t.shape[0]
        cls, patches = t[:, :1], t[:, 1:]
        t = torch.cat([cls, prompts[0].expand(batch, -1, -1), patches], dim=1)
        for i, blk in enumerate(base.blocks):
            if deep and i > 0:
                t = torch.cat([t[:, :1], prompts[i].expand(batch, -1, -1), t[:, 1 + n :]], dim=1)
            t = blk(t)
        return torch.cat([t[:, :1], t[:, 1 + n :]], dim=1)

    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    out = model.eval()(x)
    torch.testing.assert_close(out, reference_blocks(base, x, blocks), rtol=1e-10, atol=1e-10)
    assert not torch.allclose(out, base(x))  # the prompts do reach the class token
    # After the last block the prompts are gone: norm, pooling and head see the pre-trained layout.
    assert model.forward_features(x).shape == base.forward_features(x).shape
    model.global_pool = base.global_pool = "avg"
    torch.testing.assert_close(model(x), reference_blocks(base, x, blocks), rtol=1e-10, atol=1e-10)


def test_vpt_deep_and_shallow_differ_only_after_the_first_block():
    """Deep with all per-block prompts equal to layer 0's is not shallow: later blocks overwrite the prompt outputs."""
    base = make_tiny_vit(dtype=torch.float64).eval()
    _, shallow = prepare("vpt_shallow", copy.deepcopy(base), length=2)
    _, deep = prepare("vpt_deep", copy.deepcopy(base), length=2)
    with torch.no_grad():
        deep.vpt.tokens.copy_(shallow.vpt.tokens.expand_as(deep.vpt.tokens))
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    assert not torch.allclose(shallow.eval()(x), deep.eval()(x))


# --- Llama ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["lora", "gps", "linear", "full"])
def test_llama_trainable_set_and_steps(name):
    base = make_tiny_llama()
    method, model = prepare(name, copy.deepcopy(base))
    head = {"score.weight"}
    names = {n for n, _ in base.named_parameters()}
    linears = [n for n, m in base.named_modules() if isinstance(m, nn.Linear) and n != "score"]
    expected = {
        "lora": {f"{n}.lora_{ab}.default.weight" for n in linears if n.endswith(("q_proj", "v_proj")) for ab in "AB"}
        | head,
        "gps": {f"{n}.weight" for n in linears} | head,
        "linear": head,
        "full": names,
    }[name]
    assert trainable(model) == expected
    report = method.param_report(model)
    assert report.total == sum(p.numel() for p in base.parameters())
    if name == "gps":
        assert report.trainable == sum(base.get_submodule(n).out_features for n in linears) + 16 * 3
    else:
        assert report.trainable == sum(p.numel() for n, p in model.named_parameters() if n in expected)
    before = snapshot(model)
    train_steps(method, model)
    assert changed(before, snapshot(model)) == expected


@pytest.mark.parametrize("name", ["adapter", "vpt_shallow", "vpt_deep", "ssf"])
def test_vit_only_methods_refuse_llama_and_name_the_alternatives(name):
    method = make_method(MethodSettings(name=name))
    model = make_tiny_llama()
    alternatives = "use full, gps, grft, linear, lora, bias"
    with pytest.raises(ValueError, match=rf"method {name} supports timm ViT models.*{alternatives}"):
        method.prepare(ModelBundle(model, detect_architecture(model), None))


def test_bias_on_a_model_without_biases_says_so():
    model = make_tiny_llama()
    with pytest.raises(ValueError, match="no bias outside its head 'score'.*use linear"):
        make_method(MethodSettings(name="bias")).prepare(ModelBundle(model, detect_architecture(model), None))


def test_lora_targets_are_configurable_and_checked():
    model = make_tiny_llama()
    _, model = prepare("lora", model, targets=["o_proj"])
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable(model) if "lora_" in n} == {"o_proj"}
    with pytest.raises(ValueError, match=r"lora: .*method.targets=\['nope'\]"):
        prepare("lora", make_tiny_vit(), targets=["nope"])


def test_lora_adapter_round_trip(tmp_path):
    base = make_tiny_vit()
    method, model = prepare("lora", copy.deepcopy(base), r=2)
    train_steps(method, model)
    path = method.save_adapter(model, tmp_path / "adapter.safetensors")
    from safetensors.torch import load_file

    saved = load_file(str(path))
    assert set(saved) == {f"blocks.{i}.attn.qkv.lora_{ab}.weight" for i in range(3) for ab in "AB"} | HEAD
    fresh = load_lora(copy.deepcopy(base), path)
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(fresh.eval()(x), model.eval()(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_saves_an_adapter_that_loads_onto_a_fresh_base_with_the_same_logits(name, tmp_path):
    """save_adapter after two steps, load_adapter onto a fresh copy of the untouched base: the model
    it gives computes exactly the trained model's logits (and is not the base: training moved them)."""
    base = make_tiny_vit()
    method, model = prepare(name, copy.deepcopy(base))
    train_steps(method, model)
    path = method.save_adapter(model, tmp_path / "adapter.safetensors")
    fresh_method = make_method(MethodSettings(name=name))
    fresh = fresh_method.load_adapter(ModelBundle(copy.deepcopy(base), detect_architecture(base), None), path)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        trained, loaded, untouched = model.eval()(x), fresh.eval()(x), base.eval()(x)
    torch.testing.assert_close(loaded, trained, rtol=0, atol=0)
    assert not torch.equal(loaded, untouched)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_hooks_not_names_decide_selection_sharding_and_label(name, tmp_path):
    """What differs between methods is an attribute or hook of the class: only the probing methods
    refuse sharding, only GRFT writes a selection file and names its selection and k in its label."""
    cls = method_class(name)
    assert cls.name == name
    assert cls.shardable == (name not in ("grft", "gps"))
    assert cls.label("row", 4) == ("grft (row, k=4)" if name == "grft" else name)
    method, model = prepare(name, make_tiny_vit())
    written = method.save_selection(model, tmp_path)
    assert (written is not None) == (name == "grft")
    if written is not None:
        assert written == tmp_path / "selection.safetensors" and written.is_file()


# --- options, registry, configs -----------------------------------------------------------------------
def test_unknown_option_names_the_allowed_ones():
    with pytest.raises(ValueError, match="method lora: unknown option.*rank; allowed: r, alpha, dropout, targets"):
        prepare("lora", make_tiny_vit(), rank=4)
    with pytest.raises(ValueError, match="method bias: unknown option.*allowed: none"):
        prepare("bias", make_tiny_vit(), k=4)


@pytest.mark.parametrize(
    "bad,match", [({"bottleneck": 0}, "bottleneck"), ({"placement": "middle"}, "houlsby, pfeiffer")]
)
def test_adapter_rejects_bad_options(bad, match):
    with pytest.raises(ValueError, match=match):
        prepare("adapter", make_tiny_vit(), **bad)


def test_unknown_method_lists_every_method():
    with pytest.raises(ValueError) as err:
        make_method(MethodSettings(name="xyz"))
    for name in ("grft",) + VIT_METHODS:
        assert name in str(err.value)


@pytest.mark.parametrize(
    "name,cls",
    [("lora", LoRAConfig), ("adapter", AdapterConfig), ("vpt_shallow", PromptConfig), ("vpt_deep", PromptConfig)],
)
def test_method_yaml_documents_the_code_defaults(name, cls):
    cfg = OmegaConf.to_container(OmegaConf.load(f"{CONF}/{name}.yaml"))
    assert cfg.pop("name") == name
    assert method_class(name).__name__ == cfg.pop("_target_").rsplit(".", 1)[-1]
    assert cfg == {f.name: f.default for f in fields(cls)}


def test_every_registered_method_has_a_config_file():
    from pathlib import Path

    assert {p.stem for p in Path(CONF).glob("*.yaml")} == set(METHODS)
