"""Expert-parallel dispatch (pretrain/expert_parallel.py): 2 gloo processes with ep_size=2 against one process
holding every expert, on the same global tokens: outputs, input gradients, every parameter's gradient."""
from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from moe_ts.config import MoEConfig
from moe_ts.moe import MoELayer
from pretrain.expert_parallel import regroup_index, shard_experts

WIDTH, TOKENS = 16, 41


def test_regroup_index_orders_rows_by_expert_then_source():
    counts_ge = torch.tensor([[2, 0, 1], [1, 3, 0]])  # source 0: e0 x2, e2 x1; source 1: e0 x1, e1 x3
    labels = ["s0e0", "s0e0", "s0e2", "s1e0", "s1e1", "s1e1", "s1e1"]
    got = [labels[i] for i in regroup_index(counts_ge).tolist()]
    assert got == ["s0e0", "s0e0", "s1e0", "s1e1", "s1e1", "s1e1", "s0e2"]


def _layer(gate: str) -> MoELayer:
    torch.manual_seed(0)
    layer = MoELayer(WIDTH, MoEConfig(num_experts=4, top_k=2, d_ff=8, gate=gate)).double()
    with torch.no_grad():
        for p in layer.experts.parameters():
            p.copy_(torch.randn_like(p) / p.shape[1] ** 0.5)
        if gate == "centroid":
            layer.gate.set_centroids(torch.randn(4, WIDTH, dtype=torch.float64), trainable=True)
    return layer


def _worker(rank: int, world: int, store_path: str, gate: str) -> None:
    dist.init_process_group("gloo", store=dist.FileStore(store_path, world), rank=rank, world_size=world)
    try:
        torch.manual_seed(1)
        x = torch.randn(2 * TOKENS, WIDTH, dtype=torch.float64)
        x[:TOKENS, 0] += 2.0  # the two ranks' tokens route differently: uneven, variable split sizes
        grad_y = torch.randn_like(x)

        ref = _layer(gate)
        x_ref = x.clone().requires_grad_(True)
        y_ref, stats_ref = ref(x_ref)
        (y_ref * grad_y).sum().backward()  # the aux terms are per-rank means under EP: compared via counts

        ep = _layer(gate)
        assert shard_experts(ep) == 1
        rows = slice(rank * TOKENS, (rank + 1) * TOKENS)
        x_ep = x[rows].clone().requires_grad_(True)
        y_ep, stats_ep = ep(x_ep)
        (y_ep * grad_y[rows]).sum().backward()

        torch.testing.assert_close(y_ep, y_ref[rows].detach(), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(x_ep.grad, x_ref.grad[rows], rtol=1e-10, atol=1e-12)
        grads = {n: p.grad for n, p in ep.named_parameters()}
        for name, p in ref.named_parameters():
            g = p.grad
            if name.startswith("experts."):
                g = g[rank * 2:(rank + 1) * 2]  # this rank's shard; already the sum over both ranks' tokens
                torch.testing.assert_close(grads[name], g, rtol=1e-10, atol=1e-12, msg=name)
            else:  # replicated router: each rank holds its tokens' share, the sum is the whole gradient
                total = grads[name].clone()
                dist.all_reduce(total)
                torch.testing.assert_close(total, g, rtol=1e-10, atol=1e-12, msg=name)
        counts = stats_ep.counts.clone()
        dist.all_reduce(counts)
        assert torch.equal(counts, stats_ref.counts)
    finally:
        dist.destroy_process_group()


@pytest.mark.dist
@pytest.mark.parametrize("gate", ["linear", "centroid"])
def test_two_process_expert_parallel_matches_one_process(tmp_path, gate):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_worker, args=(2, str(tmp_path / "store"), gate), nprocs=2, join=True)
