"""Helpers shared by the kernel tests (tests/kernels/, tests/moe_ts/test_dispatchers.py)."""
from __future__ import annotations

import pytest
import torch
from torch import Tensor

# CPU runs the kernels in Triton's interpreter; CUDA cases carry the `gpu` marker (skipped without a device).
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def rel_err(got: Tensor, want: Tensor, floor: float = 1e-6) -> float:
    """max |got − want| / max(max |want|, floor), in float64 (the floor keeps exact zeros from dividing by ~0)."""
    got, want = got.detach().double(), want.detach().double()
    assert got.shape == want.shape, f"shape {tuple(got.shape)} != {tuple(want.shape)}"
    assert torch.isfinite(got).all(), "result holds NaN/inf (an output element was never written?)"
    return ((got - want).abs().max() / want.abs().max().clamp_min(floor)).item() if want.numel() else 0.0


def tie_free_rows(scores_te: Tensor, top_k: int, tol: float) -> Tensor:
    """Rows [T] bool whose top-(k+1) scores are separated by more than `tol` (so top-k and its order are unambiguous)."""
    num_experts = scores_te.shape[1]
    take = min(top_k + 1, num_experts)
    top = scores_te.double().topk(take, dim=-1).values
    if take < 2:
        return torch.ones(scores_te.shape[0], dtype=torch.bool, device=scores_te.device)
    return ((top[:, :-1] - top[:, 1:]) > tol).all(dim=-1)


def distinct_logits(num_tokens: int, num_experts: int, dtype: torch.dtype, device: str, gen: torch.Generator) -> Tensor:
    """Random logits [T, E] whose values in each row are at least 0.3 apart (no ties, even in bfloat16)."""
    ranks = torch.argsort(torch.rand(num_tokens, num_experts, generator=gen), dim=1).double()
    jitter = torch.rand(num_tokens, num_experts, generator=gen, dtype=torch.float64) * 0.2
    return (ranks * 0.5 + jitter - num_experts / 4).to(dtype).to(device)


def stable_slots(ids_tk: Tensor) -> Tensor:
    """Inverse of the stable argsort of the flattened ids: each pair's row in expert-contiguous order [T, k] int32."""
    flat = ids_tk.reshape(-1)
    slots = torch.empty_like(flat, dtype=torch.int32)
    slots[torch.argsort(flat, stable=True)] = torch.arange(flat.numel(), dtype=torch.int32, device=flat.device)
    return slots.view_as(ids_tk)
