"""Grouped expert GEMMs (docs/ARCHITECTURE.md §3): SwiGLU experts over expert-contiguous rows.

`torch._grouped_mm` runs all E GEMMs of one projection in one call with the group ends on the
device (no host sync). CUDA has a fast path for bfloat16 on SM90+ and a fallback on SM80+; it requires
16-byte-aligned row strides and does not take float64. torch 2.13's CPU build has only a composite
fallback whose backward is about 2x slower than one `torch.mm` per expert, so on the CPU (and wherever
grouped_mm cannot run) the experts use `expert_loop_mm`: one mm per non-empty expert into preallocated
outputs and gradients (the counts are read to the host once per projection, free on the CPU).
`expert_gemm_path` names the path taken and why, which the benchmarks print: never a silent fallback.
`swiglu_loop` is the plain-autograd reference the tests compare both against.

Shape legend: P permuted rows (T·k), D model width, F expert hidden width, E experts.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

GROUPED_MM = "torch._grouped_mm"
EXPERT_LOOP = "per-expert torch.mm"
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


def expert_gemm_path(x_pd: Tensor, *weights: Tensor) -> str:
    """The expert GEMMs' default: `torch._grouped_mm` on CUDA where it runs, else `EXPERT_LOOP` (on the CPU
    always: one mm per expert beats torch's CPU fallback; elsewhere with the reason grouped_mm cannot run)."""
    grouped = grouped_mm_path(x_pd, *weights)
    if x_pd.device.type == "cpu":
        return EXPERT_LOOP
    return grouped if grouped == GROUPED_MM else f"{EXPERT_LOOP}: {grouped}"


def grouped_mm(x_pd: Tensor, w_eio: Tensor, ends_e: Tensor) -> Tensor:
    """Rows ends[e-1]:ends[e] of x times w[e]: [P, I] × [E, I, O] → [P, O] (ends int32 on the device)."""
    return torch._grouped_mm(x_pd, w_eio, offs=ends_e)


class _ExpertLoopMM(torch.autograd.Function):
    """Grouped GEMM as one `torch.mm` per non-empty expert, each writing its rows of one preallocated output;
    the backward writes dX and each expert's dW slice in place (dW of an expert without rows is zeroed, the
    rest is never filled first). On CPU this is about 2x faster forward+backward than `torch._grouped_mm`'s
    composite fallback, whose backward materialises and reduces per-group copies (BENCHMARKS.md)."""

    @staticmethod
    def forward(ctx: Any, x_pi: Tensor, w_eio: Tensor, counts: list[int]) -> Tensor:
        ctx.save_for_backward(x_pi, w_eio)
        ctx.counts = counts
        out_po = x_pi.new_empty(x_pi.shape[0], w_eio.shape[-1])
        start = 0
        for e, rows in enumerate(counts):
            if rows:
                torch.mm(x_pi[start:start + rows], w_eio[e], out=out_po[start:start + rows])
            start += rows
        return out_po

    @staticmethod
    def backward(ctx: Any, grad_po: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        x_pi, w_eio = ctx.saved_tensors
        grad_po = grad_po.contiguous()
        want_x, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_x = torch.empty_like(x_pi) if want_x else None
        grad_w = torch.empty_like(w_eio) if want_w else None
        start = 0
        for e, rows in enumerate(ctx.counts):
            block = slice(start, start + rows)
            if rows and want_x:
                torch.mm(grad_po[block], w_eio[e].t(), out=grad_x[block])
            if want_w:
                if rows:
                    torch.mm(x_pi[block].t(), grad_po[block], out=grad_w[e])
                else:
                    grad_w[e].zero_()
            start += rows
        return grad_x, grad_w, None


def expert_loop_mm(x_pi: Tensor, w_eio: Tensor, counts: list[int]) -> Tensor:
    """Rows of expert e (consecutive blocks of `counts[e]` rows) times w[e]: [P, I] × [E, I, O] → [P, O],
    one `torch.mm` per non-empty expert (any dtype, any device; counts are host integers)."""
    if len(counts) != w_eio.shape[0] or sum(counts) != x_pi.shape[0]:
        raise ValueError(f"expert_loop_mm: {len(counts)} counts summing to {sum(counts)} for {w_eio.shape[0]} "
                         f"experts and {x_pi.shape[0]} rows")
    device = x_pi.device.type
    if torch.is_autocast_enabled(device):  # mm with out= is outside autocast's reach: cast as autocast's mm would
        dtype = torch.get_autocast_dtype(device)
        x_pi, w_eio = x_pi.to(dtype), w_eio.to(dtype)
    return _ExpertLoopMM.apply(x_pi, w_eio, counts)


def swiglu(x: Tensor, w_gate: Any, w_up: Any, w_down: Any, mm: Callable[[Tensor, Any], Tensor] = torch.matmul) -> Tensor:
    """The one SwiGLU expert formula: mm(silu(mm(x, W_gate)) ⊙ mm(x, W_up), W_down).

    `mm` is the product: a plain matmul for one expert, a grouped GEMM over expert blocks, a batched
    GEMM over a capacity buffer, or `lambda a, lin: lin(a)` for nn.Linear weights.
    """
    return mm(F.silu(mm(x, w_gate)) * mm(x, w_up), w_down)


def grouped_swiglu(x_pd: Tensor, offsets_e1: Tensor, w_gate: Tensor, w_up: Tensor, w_down: Tensor,
                   path: str | None = None) -> Tensor:
    """Expert e on its row block offsets[e]:offsets[e+1]: (silu(x·W_gate[e]) ⊙ x·W_up[e])·W_down[e] → [P, D]."""
    path = path or expert_gemm_path(x_pd, w_gate, w_up, w_down)
    if x_pd.shape[0] == 0:
        return x_pd.new_zeros(0, w_down.shape[-1])
    if path == GROUPED_MM:
        ends = offsets_e1[1:].to(torch.int32).contiguous()
        return swiglu(x_pd, w_gate, w_up, w_down, lambda a, w: grouped_mm(a, w, ends))
    counts = (offsets_e1[1:] - offsets_e1[:-1]).tolist()
    return swiglu(x_pd, w_gate, w_up, w_down, lambda a, w: expert_loop_mm(a, w, counts))


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
