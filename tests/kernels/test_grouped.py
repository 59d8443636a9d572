"""Grouped SwiGLU experts (kernels/grouped.py): torch._grouped_mm path against the per-expert loop,
with empty experts, E not a power of two, float32/bfloat16, gradients; the fallback is explicit."""
from __future__ import annotations

import pytest
import torch

from kernels.grouped import GROUPED_MM, grouped_mm_path, grouped_swiglu, swiglu_loop
from kernels.testing import DEVICES, rel_err


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(torch.seed() % (2**31))


def _case(rows_per_expert: list[int], width: int, hidden: int, dtype, device, gen):
    num_experts = len(rows_per_expert)
    counts = torch.tensor(rows_per_expert)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)]).to(torch.int32).to(device)
    x = torch.randn(int(counts.sum()), width, generator=gen).to(dtype).to(device).requires_grad_(True)
    ws = [(torch.randn(num_experts, a, b, generator=gen) / a**0.5).to(dtype).to(device).requires_grad_(True)
          for a, b in ((width, hidden), (width, hidden), (hidden, width))]
    return x, offsets, counts.to(device), ws


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_grouped_swiglu_matches_loop(device, dtype):
    gen = _gen()
    x, offsets, counts, (wg, wu, wd) = _case([5, 0, 17, 1, 0, 9, 3], 32, 48, dtype, device, gen)
    path = grouped_mm_path(x, wg, wu, wd)
    assert path == GROUPED_MM, path  # torch 2.13 CPU and SM80+ CUDA both run torch._grouped_mm
    y = grouped_swiglu(x, offsets, wg, wu, wd)
    ref_in = [t.detach().clone().requires_grad_(True) for t in (x, wg, wu, wd)]
    ref = swiglu_loop(ref_in[0], counts, *ref_in[1:])
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert rel_err(y, ref) <= tol
    g = torch.randn(y.shape, generator=gen).to(dtype).to(device)
    grads = torch.autograd.grad(y, (x, wg, wu, wd), g)
    ref_grads = torch.autograd.grad(ref, ref_in, g)
    for name, a, b in zip(("x", "w_gate", "w_up", "w_down"), grads, ref_grads):
        assert rel_err(a, b) <= tol, name
    for e in (1, 4):  # experts without rows get exactly zero weight gradients
        assert all(gw[e].abs().max() == 0 for gw in grads[1:])


def test_grouped_fallback_is_explicit_and_correct():
    gen = _gen()
    x, offsets, counts, (wg, wu, wd) = _case([3, 0, 4], 10, 6, torch.float32, "cpu", gen)  # 40-byte rows
    path = grouped_mm_path(x, wg, wu, wd)
    assert path.startswith("loop (") and "16-byte" in path
    y = grouped_swiglu(x, offsets, wg, wu, wd)
    assert rel_err(y, swiglu_loop(x, counts, wg, wu, wd)) == 0.0
    x64 = x.detach().double()
    assert "float64" in grouped_mm_path(x64, wg.double())


def test_grouped_swiglu_gradcheck_float64_fallback():
    """torch._grouped_mm takes no float64: the loop path carries gradcheck."""
    gen = _gen()
    x, offsets, counts, ws = _case([2, 0, 3], 4, 5, torch.float64, "cpu", gen)
    assert torch.autograd.gradcheck(lambda *a: grouped_swiglu(a[0], offsets, *a[1:]), (x, *ws), fast_mode=True)
