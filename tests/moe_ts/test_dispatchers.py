"""MoE dispatchers (moe_ts/dispatch.py, pretrain/moe_deepspeed.py) against the `torch` reference on the same weights:
outputs, input and parameter gradients and the layer's stats; odd T, E not a power of two with an expert
that gets no token, k = 1..4, both gates (nearest and farthest centroids), float32 and bfloat16.
DeepSpeed is compared with a capacity factor large enough that nothing drops, and its drops are checked
against the reference with the dropped pairs removed. megablocks needs CUDA and says so on CPU."""
from __future__ import annotations

import copy

import pytest
import torch

import pretrain.moe_deepspeed  # noqa: F401  (registers the "deepspeed" dispatcher)
from kernels._common import poison_outputs
from kernels.testing import DEVICES, rel_err
from kernels.topk import Routing, dispatch_fields
from moe_ts.config import MoEConfig
from moe_ts.dispatch import dispatch_reference, dispatcher_names, make_dispatcher, set_moe_dispatcher
from moe_ts.moe import MoELayer

WIDTH, HIDDEN, EMPTY = 32, 48, 3

CASES = [  # gate, select, weighting, top_k, num_experts
    ("linear", "nearest", "softmax_topk", 1, 5),
    ("linear", "nearest", "softmax_renorm", 2, 7),
    ("centroid", "nearest", "softmax_topk", 3, 7),
    ("centroid", "farthest", "softmax_renorm", 4, 9),
]


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(torch.seed() % (2**31))


def _layer_and_input(gate, select, weighting, top_k, num_experts, dtype, device, gen, num_tokens=67):
    cfg = MoEConfig(num_experts=num_experts, top_k=top_k, d_ff=HIDDEN, gate=gate, centroid_select=select,
                    weighting=weighting)
    layer = MoELayer(WIDTH, cfg)
    x = torch.randn(num_tokens, WIDTH, generator=gen)
    x[:, 0] = 3.0  # a constant feature lets the linear gate shut one expert out
    with torch.no_grad():
        for p in layer.experts.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) / p.shape[1] ** 0.5)
        if gate == "linear":
            layer.gate.proj.weight.copy_(torch.randn(num_experts, WIDTH, generator=gen) * 0.5)
            layer.gate.proj.weight[EMPTY, 0] = -30.0
        else:
            c = torch.randn(num_experts, WIDTH, generator=gen)
            c[EMPTY] = 60.0 if select == "nearest" else x.mean(0)  # never among the nearest / the farthest
            layer.gate.set_centroids(c, trainable=True)  # finetuning case: gradients reach the centroids
    return layer.to(dtype).to(device), x.to(dtype).to(device)


def _run(layer: MoELayer, x: torch.Tensor, dispatcher: str, grad_y: torch.Tensor, rows: torch.Tensor | None = None):
    layer = copy.deepcopy(layer)
    # capacity factor E: DeepSpeed's capacity ceil(E·k·T/E) ≥ T·k pairs, nothing drops
    set_moe_dispatcher(layer, dispatcher, capacity_factor=float(layer.cfg.num_experts))
    x = x.detach().clone().requires_grad_(True)
    with poison_outputs():
        y, stats = layer(x)
        keep = torch.ones(x.shape[0], dtype=torch.bool, device=x.device) if rows is None else rows
        loss = (y.float() * grad_y)[keep].sum() + stats.aux_loss + stats.z_loss
        loss.backward()
    grads = {n: p.grad for n, p in layer.named_parameters() if p.grad is not None}
    return y.detach(), x.grad, grads, stats


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("dispatcher", ["triton", "deepspeed"])
@pytest.mark.parametrize("gate,select,weighting,top_k,num_experts", CASES)
def test_dispatcher_matches_torch_reference(device, dtype, dispatcher, gate, select, weighting, top_k, num_experts):
    if dispatcher == "deepspeed" and device == "cuda":
        pytest.importorskip("deepspeed")
    gen = _gen()
    layer, x = _layer_and_input(gate, select, weighting, top_k, num_experts, dtype, device, gen)
    grad_y = torch.randn(x.shape, generator=gen).to(device)
    truth_layer, x64 = copy.deepcopy(layer).double(), x.double()  # bf16 values are exact in float64
    with torch.no_grad():
        ids_ref = layer.route(x).expert_ids
        ref_scores = layer.route(x).scores.float()
        ids_64 = truth_layer.route(x64).expert_ids
        if dispatcher == "triton":
            ids_b = layer.route(x, fused=True).expert_ids
        else:
            ids_b = ids_ref  # deepspeed and megablocks use the layer's own router

    def agree(a, b):
        return (a.sort(1).values == b.sort(1).values).all(1)

    same = agree(ids_b, ids_ref)
    if dtype == torch.float32:
        assert same.all(), "the fused router picked other experts than the reference"
    else:
        # bfloat16: centroid scores are rounded before top-k in the reference but not in the fused kernel, and
        # equal bfloat16 logits may be ordered differently; every mismatch must be a tie at bfloat16 resolution.
        assert same.float().mean() > 0.7
        top = ref_scores.topk(min(top_k + 1, num_experts), dim=-1).values
        gap = (top[:, :-1] - top[:, 1:]).abs().min(dim=1).values
        assert (gap[~same] <= 0.01 * top[~same].abs().max(dim=1).values).all(), "a mismatch that is no bf16 tie"
    rows = same & agree(ids_b, ids_64)
    assert rows.float().mean() > 0.7
    mask = None if rows.all() else rows
    y_b, gx_b, grads_b, stats_b = _run(layer, x, dispatcher, grad_y, rows=mask)
    y_r, gx_r, grads_r, stats_r = _run(layer, x, "torch", grad_y, rows=mask)
    y_t, gx_t, grads_t, _ = _run(truth_layer, x64, "torch", grad_y.double(), rows=mask)

    pairs = [("y", y_b[rows], y_r[rows], y_t[rows]), ("x.grad", gx_b, gx_r, gx_t)]
    assert grads_b.keys() == grads_r.keys()
    pairs += [(name, grads_b[name], grads_r[name], grads_t[name]) for name in grads_r]
    for name, got, ref, truth in pairs:
        if dtype == torch.float32:
            assert rel_err(got, ref) <= 2e-5, name
        else:  # about as close to the float64 truth as the bfloat16 reference is (bf16 noise: ~1e-2)
            assert rel_err(got, truth) <= max(2.0 * rel_err(ref, truth), 3e-2), name
    if rows.all():
        assert torch.equal(stats_b.counts.cpu(), stats_r.counts.cpu())
        assert stats_r.counts[EMPTY] == 0
        tol = 2e-5 if dtype == torch.float32 else 2e-2
        assert rel_err(stats_b.aux_loss, stats_r.aux_loss) <= tol and rel_err(stats_b.z_loss, stats_r.z_loss) <= tol


def test_deepspeed_drops_over_capacity():
    """With a small capacity factor DeepSpeed drops the pairs past each expert's capacity (in token order)."""
    gen = _gen()
    layer, x = _layer_and_input("linear", "nearest", "softmax_topk", 2, 5, torch.float32, "cpu", gen, num_tokens=41)
    set_moe_dispatcher(layer, "deepspeed", capacity_factor=0.5)
    with torch.no_grad():
        y, _ = layer(x)
        routing = layer.route(x)
    num_tokens, top_k = routing.expert_ids.shape
    capacity = max(int(-(-num_tokens * 0.5 * top_k // 5)), 4)  # ceil(cf·k·T/E), DeepSpeed's min_capacity 4 here
    flat = routing.expert_ids.reshape(-1)
    rank = torch.zeros_like(flat)
    for e in range(5):
        where = (flat == e).nonzero().squeeze(1)
        rank[where] = torch.arange(where.numel())
    kept = (rank < capacity).view(num_tokens, top_k)
    assert (~kept).any(), "the test meant some pairs to be dropped"
    expected = dispatch_reference(x, Routing(routing.expert_ids, routing.weights * kept, routing.scores,
                                             *dispatch_fields(routing.expert_ids, 5)), layer.experts)
    assert rel_err(y, expected) <= 2e-5


def test_megablocks_needs_cuda():
    layer, x = _layer_and_input("linear", "nearest", "softmax_topk", 2, 5, torch.float32, "cpu", _gen())
    set_moe_dispatcher(layer, "megablocks")
    with pytest.raises(RuntimeError, match="CUDA"):
        layer(x)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_megablocks_matches_torch_reference(dtype):
    pytest.importorskip("megablocks", reason="megablocks is not installed on this GPU machine")
    gen = _gen()
    layer, x = _layer_and_input("linear", "nearest", "softmax_topk", 2, 7, dtype, "cuda", gen)
    grad_y = torch.randn(x.shape, generator=gen).cuda()
    y_b, gx_b, grads_b, _ = _run(layer, x, "megablocks", grad_y)
    y_r, gx_r, grads_r, _ = _run(layer, x, "torch", grad_y)
    tol = 2e-5 if dtype == torch.float32 else 3e-2
    assert rel_err(y_b, y_r) <= tol and rel_err(gx_b, gx_r) <= tol
    for name in grads_r:
        assert rel_err(grads_b[name], grads_r[name]) <= tol, name


def test_dispatcher_names_and_built_once():
    assert {"torch", "triton", "deepspeed", "megablocks"} <= set(dispatcher_names())
    layer, x = _layer_and_input("linear", "nearest", "softmax_topk", 2, 5, torch.float32, "cpu", _gen())
    assert type(make_dispatcher("torch", layer)) is not type(make_dispatcher("triton", layer))
    with pytest.raises(ValueError, match="unknown MoE dispatcher 'cutlass'"):
        make_dispatcher("cutlass", layer)
    set_moe_dispatcher(layer, "deepspeed", capacity_factor=5.0)
    moe_before = layer.dispatcher.moe
    with torch.no_grad():
        layer(x)
        layer(x)
    assert layer.dispatcher.moe is moe_before  # DeepSpeed's MOELayer is built once, not per forward
    assert set(layer.state_dict()) == {"gate.proj.weight", "experts.w_up", "experts.w_gate", "experts.w_down"}
