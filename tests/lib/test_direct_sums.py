"""A Linear layer's per-batch weight gradient added into the probe's sum block by block
(``grft.direct_sums``) is autograd's gradient bit for bit, and the probe uses it only where it may.

- ``add_weight_gradient`` against autograd's ``weight.grad`` for 2-D and 3-D inputs, float32 and
  float64, blocks smaller than one row up to the whole matrix (bit for bit), and against a float64
  dense product (to rounding).
- In a probe pass, the plain Linear layers outside the checkpointed blocks sum directly (autograd
  accumulates no gradient for their weights); a layer called twice, a weight shared by two layers,
  and an output edited in place through a view after the layer go through autograd, and every
  sum is the plain probe's bit for bit.
"""

from __future__ import annotations

import pytest
import torch
from test_probe_memory import workload
from torch import nn

import grft
import grft.direct_sums as direct_sums
from grft.direct_sums import add_weight_gradient


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "shape,out,block",
    [
        ((37, 24), 200, 64 * 24),  # blocks of 64 rows, the last one 72
        ((3, 11, 24), 131, 1),  # the smallest block: 64 rows
        ((5, 16, 64), 300, 1 << 20),  # one block: the whole product
        ((2, 70, 96), 1001, 128 * 96),  # 128-row blocks, 105 left over in the last
    ],
)
def test_blockwise_sum_is_autograds_weight_gradient_bit_for_bit(monkeypatch, dtype, shape, out, block):
    monkeypatch.setattr(direct_sums, "BLOCK_ELEMENTS", block)
    g = torch.Generator().manual_seed(0)
    layer = nn.Linear(shape[-1], out, dtype=dtype)
    x = torch.randn(*shape, generator=g, dtype=dtype)
    grad_y = torch.randn(*shape[:-1], out, generator=g, dtype=dtype)
    start = torch.randn(out, shape[-1], generator=g, dtype=dtype)
    layer(x).backward(grad_y)
    total = start.clone()
    add_weight_gradient(total, grad_y, x)
    assert torch.equal(total, start + layer.weight.grad)
    dense = grad_y.reshape(-1, out).double().t() @ x.reshape(-1, shape[-1]).double()
    scale = float(dense.abs().max())
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(layer.weight.grad.double(), dense, rtol=0, atol=tol * scale)


def test_row_blocks_are_aligned_never_thin_and_cover_every_row_once():
    for rows, width in [(4099, 2048), (200, 24), (63, 5), (8192, 2048), (2048, 8192), (65, 1 << 21)]:
        blocks = direct_sums.row_blocks(rows, width)
        assert blocks[0][0] == 0 and blocks[-1][1] == rows
        assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:], strict=False))
        assert all(start % direct_sums.ROW_ALIGNMENT == 0 for start, _ in blocks)
        assert len(blocks) == 1 or all(stop - start >= direct_sums.ROW_ALIGNMENT for start, stop in blocks)
        bound = 2 * max(
            direct_sums.BLOCK_ELEMENTS, direct_sums.ROW_ALIGNMENT * width
        )  # the last block may add the rest
        assert all((stop - start) * width < bound for start, stop in blocks)


class QuirkyBlock(nn.Module):
    """Linear layers in every situation the direct sum must leave to autograd, or survive."""

    def __init__(self):
        super().__init__()
        self.edited = nn.Linear(6, 6)  # its output is scaled in place afterwards
        self.twice = nn.Linear(6, 6)  # called twice
        self.left = nn.Linear(6, 6)
        self.right = nn.Linear(6, 6)
        self.right.weight = self.left.weight  # one weight, two layers
        self.plain = nn.Linear(6, 6)

    def forward(self, x):
        h = self.edited(x)
        h[:, :3].mul_(1.5)  # through a view, as Swin-V2 scales a projection's output
        h = torch.tanh(self.twice(torch.tanh(self.twice(h))))
        h = torch.tanh(self.left(h)) + torch.tanh(self.right(h))
        return self.plain(h)


class Quirks(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = QuirkyBlock()
        self.head = nn.Linear(6, 4)

    def forward(self, x):
        return self.head(self.block(x))


def quirk_probe(model, low_memory: bool, passes: int = 1):
    g = torch.Generator().manual_seed(3)
    batches = [(torch.randn(8, 6, generator=g), torch.arange(8) % 4) for _ in range(3)]

    def loss(m, batch):
        x, y = batch
        return nn.functional.cross_entropy(m(x), y)

    cfg = grft.GRFTConfig(k=1, selection="row")
    arch = grft.Architecture(head="head", blocks=("block",))
    return grft.accumulate_gradients(model, batches, cfg, loss_fn=loss, arch=arch, low_memory=low_memory, passes=passes)


def test_a_layer_called_twice_a_shared_weight_and_an_edited_output_give_the_plain_probes_sums():
    torch.manual_seed(0)
    model = Quirks()
    accumulated: set[str] = set()
    for name, p in model.named_parameters():
        if name.endswith("weight"):
            p.register_post_accumulate_grad_hook(lambda _p, name=name: accumulated.add(name))
    plain = quirk_probe(model, low_memory=False)
    accumulated.clear()
    for passes in (1, 3):
        low = quirk_probe(model, low_memory=True, passes=passes)
        assert low.keys() == plain.keys()
        for n in plain:
            assert torch.equal(low[n], plain[n]), (passes, n)
    # Only the plain layer summed directly; the edited output, the twice-called layer and the shared
    # weight went through autograd.
    assert {"block.edited.weight", "block.twice.weight", "block.left.weight"} <= accumulated
    assert "block.plain.weight" not in accumulated


@pytest.mark.parametrize("name", ["vit", "llama"])
def test_the_layers_outside_the_checkpointed_blocks_sum_directly_in_a_real_model(name):
    model, batches = workload(name)
    layers = grft.eligible_layers(model, grft.detect_architecture(model))
    accumulated: set[str] = set()
    for n, layer in layers.items():
        layer.weight.register_post_accumulate_grad_hook(lambda _w, n=n: accumulated.add(n))
    torch.manual_seed(7)
    grft.accumulate_gradients(model, batches[:1], grft.GRFTConfig(k=2), passes=1)
    blocks = [model.get_submodule(b) for b in grft.architecture.block_names(model, grft.detect_architecture(model))]
    in_last = {n for n, layer in layers.items() if any(layer is m for m in blocks[-1].modules())}
    linear_in_last = {n for n in in_last if isinstance(layers[n], nn.Linear)}
    assert linear_in_last and not linear_in_last & accumulated  # summed directly
    checkpointed = (
        set(layers) - in_last - {n for n in layers if not any(layers[n] is m for b in blocks for m in b.modules())}
    )
    assert checkpointed <= accumulated  # inside a checkpointed block: autograd's gradient
