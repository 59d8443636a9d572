"""Permute / un-permute kernels (kernels/permute.py) against their plain-torch references: fresh random
inputs, poisoned outputs, odd T and D, E not a power of two with empty experts, k = 1..4, float32 and
bfloat16, several programs per launch, gradients by gradcheck (float64) and against the reference's autograd."""
from __future__ import annotations

import pytest
import torch

from kernels._common import poison_outputs
from kernels.permute import permute, permute_reference, unpermute, unpermute_reference
from kernels.testing import DEVICES, rel_err, stable_slots


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(torch.seed() % (2**31))


def _routing(num_tokens: int, num_experts: int, top_k: int, gen: torch.Generator, device: str):
    """Random distinct top-k ids [T, k] over E experts of which experts 0 and E-1 get nothing; slots; weights."""
    usable = num_experts - 2
    ids = torch.argsort(torch.rand(num_tokens, usable, generator=gen), dim=1)[:, :top_k] + 1
    weights = torch.softmax(torch.randn(num_tokens, top_k, generator=gen), dim=-1)
    counts = torch.bincount(ids.reshape(-1), minlength=num_experts)
    assert counts[0] == 0 and counts[-1] == 0
    return ids.to(device), stable_slots(ids).to(device), weights.to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("top_k", [1, 2, 3, 4])
def test_permute_unpermute_match_reference(device, dtype, top_k):
    gen = _gen()
    num_tokens, num_experts, width = 45, 7, 37
    _, slots, weights = _routing(num_tokens, num_experts, top_k, gen, device)
    x = torch.randn(num_tokens, width, generator=gen).to(dtype).to(device).requires_grad_(True)
    w = weights.to(dtype).requires_grad_(True)
    with poison_outputs():
        x_pd = permute(x, slots, block_rows=16)  # several programs
    assert torch.equal(x_pd, permute_reference(x.detach(), slots))  # a copy: bit-exact

    y = torch.randn(num_tokens * top_k, width, generator=gen).to(dtype).to(device).requires_grad_(True)
    with poison_outputs():
        out = unpermute(y, slots, w, block_rows=16)
    ref_y = y.detach().clone().requires_grad_(True)
    ref_w = w.detach().clone().requires_grad_(True)
    ref = unpermute_reference(ref_y, slots, ref_w)
    assert out.dtype == dtype
    assert rel_err(out, ref) <= (1e-6 if dtype == torch.float32 else 8e-3)

    g = torch.randn(num_tokens, width, generator=gen).to(dtype).to(device)
    with poison_outputs():
        gy, gw = torch.autograd.grad(out, (y, w), g)
    ry, rw = torch.autograd.grad(ref, (ref_y, ref_w), g)
    assert rel_err(gy, ry) <= (1e-6 if dtype == torch.float32 else 8e-3)
    assert rel_err(gw, rw) <= (1e-5 if dtype == torch.float32 else 2e-2)

    gp = torch.randn(num_tokens * top_k, width, generator=gen).to(dtype).to(device)
    with poison_outputs():
        (gx,) = torch.autograd.grad(x_pd, x, gp)
    x_ref = x.detach().clone().requires_grad_(True)
    (gx_ref,) = torch.autograd.grad(permute_reference(x_ref, slots), x_ref, gp)
    assert rel_err(gx, gx_ref) <= (1e-6 if dtype == torch.float32 else 8e-3)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("top_k", [1, 3])
def test_permute_unpermute_default_blocks_roundtrip(device, top_k):
    """Default block sizes; un-permuting a permutation with unit weights gives k·x back."""
    gen = _gen()
    num_tokens, width = 1003, 65
    _, slots, _ = _routing(num_tokens, 9, top_k, gen, device)
    x = torch.randn(num_tokens, width, generator=gen).to(device)
    with poison_outputs():
        back = unpermute(permute(x, slots), slots, torch.ones(num_tokens, top_k, device=device))
    assert rel_err(back, top_k * x) <= 1e-6


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("top_k", [2, 4])
def test_permute_unpermute_gradcheck(device, top_k):
    gen = _gen()
    num_tokens, width = 7, 5
    _, slots, weights = _routing(num_tokens, 7, top_k, gen, device)
    x = torch.randn(num_tokens, width, generator=gen, dtype=torch.float64).to(device).requires_grad_(True)
    y = torch.randn(num_tokens * top_k, width, generator=gen, dtype=torch.float64).to(device).requires_grad_(True)
    w = weights.double().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: permute(a, slots), (x,), fast_mode=True)
    assert torch.autograd.gradcheck(lambda a, b: unpermute(a, slots, b), (y, w), fast_mode=True)


def test_permute_rejects_bad_arguments():
    slots = torch.zeros(4, 2, dtype=torch.int32)
    with pytest.raises(ValueError, match="int32"):
        permute(torch.randn(4, 8), slots.long())
    with pytest.raises(ValueError, match="rows"):
        permute(torch.randn(5, 8), slots)
    with pytest.raises(ValueError, match="rows"):
        unpermute(torch.randn(7, 8), slots, torch.ones(4, 2))
