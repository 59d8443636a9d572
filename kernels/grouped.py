"""Grouped expert GEMMs (docs/ARCHITECTURE.md §3): SwiGLU experts over expert-contiguous rows.

`torch._grouped_mm` runs all E GEMMs of one projection in one call with the group ends on the
device (no host sync). torch 2.13's CPU build has it (composite fallback, float32/bfloat16/float16);
CUDA has a fast path for bfloat16 on SM90+ and a fallback on SM80+. It requires 16-byte-aligned row
strides and does not take float64. Where it cannot run, `grouped_swiglu` uses the per-expert loop
(`torch.split` by counts, one host sync) and says so through `grouped_mm_path`, which the benchmark
prints: the fallback is explicit, never silent.

Shape legend: P permuted rows (T·k), D model width, F expert hidden width, E experts.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

GROUPED_MM = "torch._grouped_mm"
_GROUPED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _aligned(t: Tensor) -> bool:
    """Every non-unit stride and the base pointer are multiples of 16 bytes."""
    size = t.element_size()
    return t.data_ptr() % 16 == 0 and all((s * size) % 16 == 0 for s, n in zip(t.stride(), t.shape) if s != 1 and n > 1)


def grouped_mm_path(x_pd: Tensor, *weights: Tensor) -> str:
    """`torch._grouped_mm` when it runs these operands on their device, else 'loop (<why>)'."""
    if not hasattr(torch, "_grouped_mm"):
        return f"loop (torch {torch.__version__} has no torch._grouped_mm)"
    if x_pd.dtype not in _GROUPED_DTYPES or any(w.dtype != x_pd.dtype for w in weights):
        return f"loop (torch._grouped_mm takes float32/bfloat16/float16 operands of one dtype, got {x_pd.dtype})"
    if x_pd.device.type == "cuda" and torch.cuda.get_device_capability(x_pd.device) < (8, 0):
        return "loop (torch._grouped_mm needs CUDA compute capability >= 8.0)"
    if x_pd.device.type not in ("cuda", "cpu"):
        return f"loop (torch._grouped_mm not used on device {x_pd.device.type})"
    if not all(_aligned(t) for t in (x_pd, *weights)):
        return "loop (torch._grouped_mm needs 16-byte-aligned strides: D and F times the element size must be multiples of 16)"
    return GROUPED_MM


def grouped_mm(x_pd: Tensor, w_eio: Tensor, ends_e: Tensor) -> Tensor:
    """Rows ends[e-1]:ends[e] of x times w[e]: [P, I] × [E, I, O] → [P, O] (ends int32 on the device)."""
    return torch._grouped_mm(x_pd, w_eio, offs=ends_e)


def swiglu(x: Tensor, w_gate: Any, w_up: Any, w_down: Any, mm: Callable[[Tensor, Any], Tensor] = torch.matmul) -> Tensor:
    """The one SwiGLU expert formula: mm(silu(mm(x, W_gate)) ⊙ mm(x, W_up), W_down).

    `mm` is the product: a plain matmul for one expert, a grouped GEMM over expert blocks, a batched
    GEMM over a capacity buffer, or `lambda a, lin: lin(a)` for nn.Linear weights.
    """
    return mm(F.silu(mm(x, w_gate)) * mm(x, w_up), w_down)


def grouped_swiglu(x_pd: Tensor, offsets_e1: Tensor, w_gate: Tensor, w_up: Tensor, w_down: Tensor,
                   path: str | None = None) -> Tensor:
    """Expert e on its row block offsets[e]:offsets[e+1]: (silu(x·W_gate[e]) ⊙ x·W_up[e])·W_down[e] → [P, D]."""
    path = path or grouped_mm_path(x_pd, w_gate, w_up, w_down)
    if x_pd.shape[0] == 0:
        return x_pd.new_zeros(0, w_down.shape[-1])
    if path == GROUPED_MM:
        ends = offsets_e1[1:].to(torch.int32).contiguous()
        return swiglu(x_pd, w_gate, w_up, w_down, lambda a, w: grouped_mm(a, w, ends))
    return swiglu_loop(x_pd, (offsets_e1[1:] - offsets_e1[:-1]), w_gate, w_up, w_down)


def swiglu_loop(x_pd: Tensor, counts_e: Tensor, w_gate: Tensor, w_up: Tensor, w_down: Tensor) -> Tensor:
    """Reference and fallback: loop over experts with `torch.split` by counts (one host sync).

    The stacked weights are unbound once: indexing `w[e]` inside the loop would make autograd
    zero-fill a full [E, D, F] gradient for every expert (E of them per weight, per backward).
    """
    gate_e, up_e, down_e = w_gate.unbind(0), w_up.unbind(0), w_down.unbind(0)
    out = []
    for e, chunk in enumerate(torch.split(x_pd, counts_e.tolist())):
        if chunk.shape[0] > 0:
            out.append(swiglu(chunk, gate_e[e], up_e[e], down_e[e]))
    return torch.cat(out, dim=0) if out else x_pd.new_zeros(0, w_down.shape[-1])
