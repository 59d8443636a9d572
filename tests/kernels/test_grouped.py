"""Grouped SwiGLU experts (kernels/grouped.py): the torch._grouped_mm and per-expert-mm paths against a
plain-autograd per-expert reference, with empty experts, E not a power of two, float32/bfloat16,
gradients; the path taken is named, never silent."""
from __future__ import annotations

import pytest
import torch

from kernels.grouped import (EXPERT_LOOP, GROUPED_MM, expert_gemm_path, expert_loop_mm, grouped_mm_path,
                             grouped_swiglu, swiglu_loop)
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
@pytest.mark.parametrize("path", [GROUPED_MM, EXPERT_LOOP])
def test_grouped_swiglu_matches_loop(device, dtype, path):
    gen = _gen()
    x, offsets, counts, (wg, wu, wd) = _case([5, 0, 17, 1, 0, 9, 3], 32, 48, dtype, device, gen)
    assert grouped_mm_path(x, wg, wu, wd) == GROUPED_MM  # torch 2.13 CPU and SM80+ CUDA both run it
    y = grouped_swiglu(x, offsets, wg, wu, wd, path=path)
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
    assert rel_err(y, swiglu_loop(x, counts, wg, wu, wd)) <= 1e-6
    x64 = x.detach().double()
    assert "float64" in grouped_mm_path(x64, wg.double())


def test_grouped_swiglu_gradcheck_float64_fallback():
    """torch._grouped_mm takes no float64: the loop path carries gradcheck."""
    gen = _gen()
    x, offsets, counts, ws = _case([2, 0, 3], 4, 5, torch.float64, "cpu", gen)
    assert torch.autograd.gradcheck(lambda *a: grouped_swiglu(a[0], offsets, *a[1:]), (x, *ws), fast_mode=True)


def test_expert_gemm_path_is_the_loop_on_cpu_and_named():
    gen = _gen()
    x, _, _, (wg, _, _) = _case([2, 3], 32, 48, torch.float32, "cpu", gen)
    assert grouped_mm_path(x, wg) == GROUPED_MM and expert_gemm_path(x, wg) == EXPERT_LOOP


@pytest.mark.parametrize("rows", [[64] * 32, [0, 130, 0, 1, 0, 3, 0, 0], [0, 0, 0]])
def test_expert_loop_mm_matches_per_expert_reference_with_gradients(rows, monkeypatch):
    """One mm per expert into preallocated outputs and gradients, at the small config's sizes (D 384, F 512)
    and with empty experts, whose weight gradient must be exactly zero: the buffers are never pre-filled, so
    here they start as NaN (fresh pages would read as zeros and hide a block left unwritten)."""
    empty_like = torch.empty_like
    monkeypatch.setattr(torch, "empty_like", lambda t, **kw: empty_like(t, **kw).fill_(float("nan")))
    gen = _gen()
    x = torch.randn(sum(rows), 384, generator=gen, requires_grad=True)
    w = (torch.randn(len(rows), 384, 512, generator=gen) / 384**0.5).requires_grad_(True)
    y = expert_loop_mm(x, w, rows)
    ref = torch.cat([x[sum(rows[:e]):sum(rows[:e + 1])] @ w[e] for e in range(len(rows))])
    assert y.shape == ref.shape and rel_err(y, ref) <= 1e-6
    if sum(rows) == 0:
        return
    g = torch.randn(y.shape, generator=gen)
    gx, gw = torch.autograd.grad(y, (x, w), g)
    rx, rw = torch.autograd.grad(ref, (x, w), g)
    assert rel_err(gx, rx) <= 1e-6 and rel_err(gw, rw) <= 1e-6
    for e, r in enumerate(rows):
        if r == 0:
            assert gw[e].abs().max() == 0


def test_expert_loop_mm_refuses_counts_that_do_not_match():
    x, w = torch.zeros(5, 4), torch.zeros(2, 4, 3)
    with pytest.raises(ValueError, match="2 counts summing to 4 for 2 experts and 5 rows"):
        expert_loop_mm(x, w, [1, 3])


def test_expert_loop_mm_under_cpu_autocast_computes_in_bfloat16_with_float32_weight_gradients():
    gen = _gen()
    x = torch.randn(7, 32, generator=gen).to(torch.bfloat16)  # what an autocast linear hands the experts
    w = torch.randn(2, 32, 16, generator=gen, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = expert_loop_mm(x, w, [3, 4])
    assert y.dtype == torch.bfloat16
    ref = torch.cat([x[:3].float() @ w[0], x[3:].float() @ w[1]])
    assert rel_err(y.float(), ref) <= 2e-2
    y.float().sum().backward()
    assert w.grad is not None and w.grad.dtype == torch.float32
