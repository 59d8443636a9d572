"""The Triton routing and permute kernels at the sizes users train at: model widths 384 and 768 and several
thousand tokens, so that every multi-block path runs (the routing scan carrying counts across token blocks,
the centroid distance looping over D tiles, permute/un-permute with many row and column programs). Each is
compared with the plain-torch dispatcher of `moe_ts.dispatch` on the same MoE layer: output, input gradient
and every parameter's gradient, gate (router weights or centroids) included. Runs under TRITON_INTERPRET=1
on CPU and natively on a GPU."""
from __future__ import annotations

import copy

import pytest
import torch

from kernels._common import poison_outputs
from kernels.testing import DEVICES, rel_err
from moe_ts.config import MoEConfig
from moe_ts.dispatch import set_moe_dispatcher
from moe_ts.moe import MoELayer

SIZES = [  # d_model, d_ff, tokens, gate
    (384, 512, 4096, "linear"),
    (768, 512, 2048, "centroid"),
]


def _run(layer: MoELayer, x: torch.Tensor, backend: str, grad_y: torch.Tensor):
    layer = copy.deepcopy(layer)
    set_moe_dispatcher(layer, backend)
    x = x.detach().clone().requires_grad_(True)
    with poison_outputs():
        y, stats = layer(x)
        ((y * grad_y).sum() + stats.aux_loss + stats.z_loss).backward()
    return y.detach(), x.grad, {n: p.grad for n, p in layer.named_parameters()}, stats


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("d_model,d_ff,tokens,gate", SIZES)
def test_triton_layer_matches_torch_at_production_size(device, d_model, d_ff, tokens, gate):
    gen = torch.Generator().manual_seed(d_model)
    cfg = MoEConfig(num_experts=8, top_k=2, d_ff=d_ff, gate=gate)
    layer = MoELayer(d_model, cfg)
    x = torch.randn(tokens, d_model, generator=gen)
    if gate == "centroid":
        layer.gate.set_centroids(torch.randn(8, d_model, generator=gen), trainable=True)
    layer, x = layer.to(device), x.to(device)
    grad_y = torch.randn(x.shape, generator=gen).to(device)
    with torch.no_grad():
        ids_fused = layer.route(x, fused=True).expert_ids.sort(1).values
        ids_ref = layer.route(x).expert_ids.sort(1).values
    assert torch.equal(ids_fused, ids_ref), "the fused router picked other experts than the reference"

    y_t, gx_t, grads_t, stats_t = _run(layer, x, "triton", grad_y)
    y_r, gx_r, grads_r, stats_r = _run(layer, x, "torch", grad_y)
    assert torch.equal(stats_t.counts.cpu(), stats_r.counts.cpu())
    assert stats_r.counts.sum().item() == tokens * 2
    assert rel_err(y_t, y_r) <= 2e-5 and rel_err(gx_t, gx_r) <= 2e-5
    assert grads_t.keys() == grads_r.keys() and any("gate" in n for n in grads_r)
    for name, ref in grads_r.items():
        assert ref is not None and grads_t[name] is not None, name
        assert rel_err(grads_t[name], ref) <= 2e-5, name
