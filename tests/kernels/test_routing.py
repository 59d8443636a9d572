"""Routing kernel (kernels/routing.py) against its plain-torch reference: fresh random inputs every run,
outputs poisoned with NaN before each call, odd T, E not a power of two, experts with no token, k = 1..4,
float32 and bfloat16, gradients by gradcheck in float64 and against the reference's autograd."""
from __future__ import annotations

import pytest
import torch

from kernels._common import poison_outputs
from kernels.routing import centroid_scores_reference, route_centroids, route_logits, route_reference
from kernels.testing import DEVICES, distinct_logits, rel_err, stable_slots, tie_free_rows

EMPTY = (2, 9)  # experts made unreachable in the tests below


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(torch.seed() % (2**31))  # fresh each run, reproducible from the log


def _reference_weights(scores_te: torch.Tensor, ids_tk: torch.Tensor, weighting: str) -> torch.Tensor:
    """Weights the reference gives to the given ids (float64), differentiable w.r.t. the scores."""
    s = scores_te.double()
    if weighting == "softmax_topk":
        return torch.softmax(s.gather(1, ids_tk), dim=-1)
    probs = torch.softmax(s, dim=-1).gather(1, ids_tk)
    return probs / probs.sum(dim=-1, keepdim=True)


def _check_dispatch_fields(r, num_experts: int, empty: tuple[int, ...]) -> None:
    counts = torch.bincount(r.expert_ids.reshape(-1).cpu(), minlength=num_experts)
    assert torch.equal(r.counts.cpu().long(), counts)
    assert all(counts[e] == 0 for e in empty), "the test meant some experts to get no token"
    assert torch.equal(r.offsets.cpu().long(), torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)]))
    assert torch.equal(r.slots.cpu(), stable_slots(r.expert_ids.cpu()))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("top_k", [1, 2, 3, 4])
@pytest.mark.parametrize("weighting", ["softmax_topk", "softmax_renorm"])
def test_route_logits_matches_reference(device, dtype, top_k, weighting):
    gen = _gen()
    num_tokens, num_experts = 37, 12
    logits = distinct_logits(num_tokens, num_experts, dtype, device, gen)
    logits[:, list(EMPTY)] = -40.0
    logits.requires_grad_(True)
    with poison_outputs():
        r = route_logits(logits, top_k, weighting, block_t=16)  # 3 blocks: exercises the cross-block scan
    ref = route_reference(logits.detach(), top_k, weighting)
    assert torch.equal(r.expert_ids, ref.expert_ids)
    assert r.weights.dtype == dtype
    assert rel_err(r.weights, ref.weights) <= (1e-6 if dtype == torch.float32 else 8e-3)
    _check_dispatch_fields(r, num_experts, EMPTY)

    grad_w = torch.randn(num_tokens, top_k, generator=gen).to(device)
    (g_kernel,) = torch.autograd.grad((r.weights.float() * grad_w).sum(), logits)
    ref_logits = logits.detach().double().requires_grad_(True)
    (g_ref,) = torch.autograd.grad((_reference_weights(ref_logits, r.expert_ids, weighting) * grad_w.double()).sum(),
                                   ref_logits)
    assert rel_err(g_kernel, g_ref) <= (1e-5 if dtype == torch.float32 else 2e-2)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("top_k", [1, 2, 3, 4])
@pytest.mark.parametrize("select", ["nearest", "farthest"])
def test_route_centroids_matches_reference(device, dtype, top_k, select):
    gen = _gen()
    num_tokens, num_experts, width = 53, 11, 40
    weighting = "softmax_topk" if top_k % 2 else "softmax_renorm"
    x = torch.randn(num_tokens, width, generator=gen).to(dtype).to(device)
    c = torch.randn(num_experts, width, generator=gen)
    c[EMPTY[0]] = 50.0 if select == "nearest" else 0.0  # never among the nearest / the farthest
    c = c.to(dtype).to(device)
    x.requires_grad_(True)
    c.requires_grad_(True)
    with poison_outputs():
        r = route_centroids(x, c, top_k, weighting, select, block_t=16)
    x64 = x.detach().double().requires_grad_(True)
    c64 = c.detach().double().requires_grad_(True)
    scores64 = centroid_scores_reference(x64, c64, select)
    clear = tie_free_rows(scores64.detach(), top_k, 1e-3)
    assert clear.float().mean() > 0.85, "too many near-ties to test the selection"
    ref_ids = scores64.detach().topk(top_k, dim=-1).indices
    assert torch.equal(r.expert_ids[clear], ref_ids[clear])
    assert r.scores.dtype == dtype and r.weights.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 8e-3
    assert rel_err(r.scores, scores64) <= tol
    w_ref = _reference_weights(scores64, r.expert_ids, weighting)
    assert rel_err(r.weights, w_ref) <= 4 * tol
    _check_dispatch_fields(r, num_experts, (EMPTY[0],))

    grad_w = torch.randn(num_tokens, top_k, generator=gen).to(device)
    grad_s = torch.randn(num_tokens, num_experts, generator=gen).to(device)
    loss = (r.weights.float() * grad_w).sum() + (r.scores.float() * grad_s).sum()
    gx, gc = torch.autograd.grad(loss, (x, c))
    loss64 = (w_ref * grad_w.double()).sum() + (scores64 * grad_s.double()).sum()
    gx64, gc64 = torch.autograd.grad(loss64, (x64, c64))
    gtol = 1e-4 if dtype == torch.float32 else 3e-2
    assert rel_err(gx, gx64) <= gtol
    assert rel_err(gc, gc64) <= gtol


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("top_k,weighting", [(1, "softmax_topk"), (2, "softmax_renorm"), (3, "softmax_topk"),
                                             (4, "softmax_renorm")])
def test_route_logits_gradcheck(device, top_k, weighting):
    gen = _gen()
    logits = torch.randn(9, 5, generator=gen, dtype=torch.float64).to(device).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: route_logits(s, top_k, weighting).weights, (logits,), fast_mode=True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("select,weighting", [("nearest", "softmax_topk"), ("farthest", "softmax_renorm")])
def test_route_centroids_gradcheck(device, select, weighting):
    gen = _gen()
    x = torch.randn(7, 6, generator=gen, dtype=torch.float64).to(device).requires_grad_(True)
    c = torch.randn(5, 6, generator=gen, dtype=torch.float64).to(device).requires_grad_(True)

    def run(a, b):
        r = route_centroids(a, b, 2, weighting, select)
        return r.weights, r.scores

    assert torch.autograd.gradcheck(run, (x, c), fast_mode=True)


@pytest.mark.parametrize("device", DEVICES)
def test_route_large_block_default_and_single_expert(device):
    """Default (large) blocks on more tokens than one GPU block, and the E = 1 corner."""
    gen = _gen()
    logits = distinct_logits(1001, 7, torch.float32, device, gen)
    with poison_outputs():
        r = route_logits(logits, 3)
    ref = route_reference(logits, 3)
    assert torch.equal(r.expert_ids, ref.expert_ids) and torch.equal(r.slots, ref.slots)
    assert torch.equal(r.offsets, ref.offsets)
    with poison_outputs():
        one = route_logits(torch.randn(5, 1, generator=gen).to(device), 1)
    assert torch.equal(one.expert_ids.cpu(), torch.zeros(5, 1, dtype=torch.long))
    assert torch.equal(one.weights.cpu(), torch.ones(5, 1))
    assert one.offsets.tolist() == [0, 5]


@pytest.mark.parametrize("device", DEVICES)
def test_route_no_tokens(device):
    with poison_outputs():
        r = route_logits(torch.zeros(0, 6, device=device), 2)
    assert r.expert_ids.shape == (0, 2) and r.counts.tolist() == [0] * 6 and r.offsets.tolist() == [0] * 7


def test_route_rejects_bad_arguments():
    with pytest.raises(ValueError, match="top_k"):
        route_logits(torch.randn(4, 3), 4)
    with pytest.raises(ValueError, match="weighting"):
        route_logits(torch.randn(4, 3), 2, "softmax_all")
    with pytest.raises(ValueError, match="select"):
        route_centroids(torch.randn(4, 8), torch.randn(3, 8), 1, select="closest")
    with pytest.raises(ValueError, match="width"):
        route_centroids(torch.randn(4, 8), torch.randn(3, 7), 1)
