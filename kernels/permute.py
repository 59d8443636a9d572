"""Permute / un-permute (docs/ARCHITECTURE.md §3, kernel steps 2 and 4): token rows ↔ expert-contiguous rows.

`permute(x_td, slots_tk)` copies token t's row to rows slots[t, i] (i < k) of a [T·k, D] buffer
ordered by expert; `unpermute(y_pd, slots_tk, weights_tk)` gathers each token's k expert outputs
back and combines them with the routing weights (float32 accumulation) into [T, D]. Both are
bandwidth-bound row copies: each program moves BLOCK rows × BLOCK_D columns with vector loads.
Backward: permute's is an un-permute without weights (sum of the k copies' gradients); un-permute's
scatters weight·grad to the permuted rows and reduces ⟨grad_y[t], y[slot]⟩ for the weights' gradient.

Shape legend: T tokens, D width, k top-k, P = T·k permuted rows; `slots_tk` [T, k] int32 as made
by `kernels.routing` (any permutation of 0..P-1 works).
"""
from __future__ import annotations

import torch
from torch import Tensor

import triton
import triton.language as tl

from kernels._common import alloc, check_2d, col_block, interpreted, row_block


@triton.jit
def _permute_kernel(x_ptr, slots_ptr, out_ptr, N, D, stride_x, stride_o,
                    K: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    """out[slots[j], :] = x[j // K, :] for the BLOCK_R pairs j of this program and its BLOCK_D columns."""
    j = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    ok = j < N
    m = ok[:, None] & (d < D)[None, :]
    t = (j // K).to(tl.int64)
    p = tl.load(slots_ptr + j, mask=ok, other=0).to(tl.int64)
    v = tl.load(x_ptr + t[:, None] * stride_x + d[None, :], mask=m)
    tl.store(out_ptr + p[:, None] * stride_o + d[None, :], v, mask=m)


@triton.jit
def _combine_kernel(y_ptr, slots_ptr, w_ptr, out_ptr, T, D, stride_y, stride_o,
                    K: tl.constexpr, HAS_W: tl.constexpr, ACC: tl.constexpr,
                    BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    """out[t, :] = Σ_i w[t, i] · y[slots[t, i], :] (w = 1 without HAS_W), accumulated in ACC."""
    t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    ok = t < T
    m = ok[:, None] & (d < D)[None, :]
    t64 = t.to(tl.int64)
    acc = tl.zeros((BLOCK_T, BLOCK_D), dtype=ACC)
    for i in tl.static_range(K):
        p = tl.load(slots_ptr + t64 * K + i, mask=ok, other=0).to(tl.int64)
        v = tl.load(y_ptr + p[:, None] * stride_y + d[None, :], mask=m, other=0.0).to(ACC)
        if HAS_W:
            w = tl.load(w_ptr + t64 * K + i, mask=ok, other=0.0).to(ACC)
            acc += w[:, None] * v
        else:
            acc += v
    tl.store(out_ptr + t64[:, None] * stride_o + d[None, :], acc.to(out_ptr.dtype.element_ty), mask=m)


@triton.jit
def _unpermute_bwd_kernel(gy_ptr, y_ptr, slots_ptr, w_ptr, gyp_ptr, gw_ptr, N, D,
                          stride_gy, stride_y, stride_gyp,
                          K: tl.constexpr, ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    """For pairs j = (t, i): grad_yp[slots[j]] = w[j]·grad_y[t]; grad_w[j] = ⟨grad_y[t], y[slots[j]]⟩."""
    j = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    ok = j < N
    t = (j // K).to(tl.int64)
    p = tl.load(slots_ptr + j, mask=ok, other=0).to(tl.int64)
    w = tl.load(w_ptr + j, mask=ok, other=0.0).to(ACC)
    dot = tl.zeros((BLOCK_R,), dtype=ACC)
    for d0 in range(0, D, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        m = ok[:, None] & (d < D)[None, :]
        g = tl.load(gy_ptr + t[:, None] * stride_gy + d[None, :], mask=m, other=0.0).to(ACC)
        v = tl.load(y_ptr + p[:, None] * stride_y + d[None, :], mask=m, other=0.0).to(ACC)
        tl.store(gyp_ptr + p[:, None] * stride_gyp + d[None, :], (w[:, None] * g).to(gyp_ptr.dtype.element_ty), mask=m)
        dot += tl.sum(g * v, axis=1)
    tl.store(gw_ptr + j, dot, mask=ok)


_TL = {torch.float32: tl.float32, torch.float64: tl.float64}


def _acc(t: Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _permute(x_td: Tensor, slots_tk: Tensor, block_rows: int | None = None) -> Tensor:
    num_tokens, top_k = slots_tk.shape
    width = x_td.shape[1]
    out = alloc((num_tokens * top_k, width), x_td.dtype, x_td.device)
    if out.numel() == 0:
        return out
    interp = interpreted(x_td)
    block_d = col_block(width, interp)
    block_r = block_rows or row_block(num_tokens * top_k, block_d, interp, gpu_rows=16)
    grid = (triton.cdiv(num_tokens * top_k, block_r), triton.cdiv(width, block_d))
    _permute_kernel[grid](x_td, slots_tk, out, num_tokens * top_k, width, x_td.stride(0), out.stride(0),
                          K=top_k, BLOCK_R=block_r, BLOCK_D=block_d)
    return out


def _combine(y_pd: Tensor, slots_tk: Tensor, w_tk: Tensor | None, out_dtype: torch.dtype,
             block_rows: int | None = None) -> Tensor:
    num_tokens, top_k = slots_tk.shape
    width = y_pd.shape[1]
    out = alloc((num_tokens, width), out_dtype, y_pd.device)
    if out.numel() == 0:
        return out
    interp = interpreted(y_pd)
    block_d = col_block(width, interp)
    block_t = block_rows or row_block(num_tokens, block_d * top_k, interp, gpu_rows=16)
    grid = (triton.cdiv(num_tokens, block_t), triton.cdiv(width, block_d))
    acc = torch.float64 if torch.float64 in (y_pd.dtype, out_dtype) else torch.float32
    _combine_kernel[grid](y_pd, slots_tk, w_tk if w_tk is not None else slots_tk, out, num_tokens, width,
                          y_pd.stride(0), out.stride(0), K=top_k, HAS_W=w_tk is not None, ACC=_TL[acc],
                          BLOCK_T=block_t, BLOCK_D=block_d)
    return out


class PermuteFn(torch.autograd.Function):
    """x [T, D] → expert-contiguous rows [T·k, D]; backward sums each token's k row gradients."""

    @staticmethod
    def forward(ctx, x_td: Tensor, slots_tk: Tensor, block_rows: int | None) -> Tensor:
        ctx.save_for_backward(slots_tk)
        ctx.block_rows = block_rows
        return _permute(x_td, slots_tk, block_rows)

    @staticmethod
    def backward(ctx, grad_pd: Tensor):
        (slots_tk,) = ctx.saved_tensors
        return _combine(grad_pd.contiguous(), slots_tk, None, grad_pd.dtype, ctx.block_rows), None, None


class UnpermuteFn(torch.autograd.Function):
    """Expert rows [T·k, D] + weights [T, k] → combined tokens [T, D]; backward to rows and weights."""

    @staticmethod
    def forward(ctx, y_pd: Tensor, slots_tk: Tensor, w_tk: Tensor, block_rows: int | None) -> Tensor:
        ctx.save_for_backward(y_pd, slots_tk, w_tk)
        ctx.block_rows = block_rows
        return _combine(y_pd, slots_tk, w_tk, y_pd.dtype, block_rows)

    @staticmethod
    def backward(ctx, grad_td: Tensor):
        y_pd, slots_tk, w_tk = ctx.saved_tensors
        grad_td = grad_td.contiguous()
        num_tokens, top_k = slots_tk.shape
        width = y_pd.shape[1]
        grad_pd = alloc(tuple(y_pd.shape), y_pd.dtype, y_pd.device)
        acc = _acc(y_pd)
        grad_w = alloc((num_tokens, top_k), acc, y_pd.device)
        if grad_w.numel() > 0:
            interp = interpreted(y_pd)
            block_d = col_block(width, interp, gpu_max=128)
            block_r = ctx.block_rows or row_block(num_tokens * top_k, block_d, interp, gpu_rows=16)
            _unpermute_bwd_kernel[(triton.cdiv(num_tokens * top_k, block_r),)](
                grad_td, y_pd, slots_tk, w_tk, grad_pd, grad_w, num_tokens * top_k, width,
                grad_td.stride(0), y_pd.stride(0), grad_pd.stride(0),
                K=top_k, ACC=_TL[acc], BLOCK_R=block_r, BLOCK_D=block_d)
        return grad_pd, None, grad_w.to(w_tk.dtype), None


def _check(x: Tensor, slots_tk: Tensor, rows: int, name: str, block_rows: int | None) -> None:
    if block_rows is not None and (block_rows < 1 or block_rows & (block_rows - 1)):
        raise ValueError(f"kernels.permute: block_rows must be a power of two, got {block_rows}")
    check_2d(name, x)
    check_2d("slots_tk", slots_tk)
    if slots_tk.dtype != torch.int32:
        raise ValueError(f"kernels.permute: slots_tk must be int32 (from kernels.routing), got {slots_tk.dtype}")
    if x.shape[0] != rows:
        raise ValueError(f"kernels.permute: {name} has {x.shape[0]} rows, expected {rows} from slots_tk {tuple(slots_tk.shape)}")


def permute(x_td: Tensor, slots_tk: Tensor, block_rows: int | None = None) -> Tensor:
    """Gather token rows [T, D] into expert-contiguous order [T·k, D]: row slots[t, i] = x[t].

    `block_rows` (a power of two) overrides the rows per program (tests use it to cover many programs).
    """
    _check(x_td, slots_tk, slots_tk.shape[0], "x_td", block_rows)
    return PermuteFn.apply(x_td, slots_tk.contiguous(), block_rows)


def unpermute(y_pd: Tensor, slots_tk: Tensor, weights_tk: Tensor, block_rows: int | None = None) -> Tensor:
    """Combine expert rows back into tokens: out[t] = Σ_i weights[t, i] · y[slots[t, i]], dtype of y."""
    _check(y_pd, slots_tk, slots_tk.numel(), "y_pd", block_rows)
    if weights_tk.shape != slots_tk.shape:
        raise ValueError(f"kernels.permute: weights_tk shape {tuple(weights_tk.shape)} != slots_tk shape {tuple(slots_tk.shape)}")
    return UnpermuteFn.apply(y_pd, slots_tk.contiguous(), weights_tk.contiguous(), block_rows)


# ----------------------------------------------------------------------------------------------
# References (plain torch)
# ----------------------------------------------------------------------------------------------


def permute_reference(x_td: Tensor, slots_tk: Tensor) -> Tensor:
    """out[slots[t, i]] = x[t] by index_copy."""
    top_k = slots_tk.shape[1]
    out = x_td.new_empty(slots_tk.numel(), x_td.shape[1])
    return out.index_copy(0, slots_tk.reshape(-1).long(), x_td.repeat_interleave(top_k, dim=0))


def unpermute_reference(y_pd: Tensor, slots_tk: Tensor, weights_tk: Tensor) -> Tensor:
    """Σ_i w[t, i]·y[slots[t, i]] with float32 (float64 for float64) accumulation, in y's dtype."""
    acc = _acc(y_pd)
    rows = y_pd.index_select(0, slots_tk.reshape(-1).long()).view(*slots_tk.shape, -1).to(acc)
    return (rows * weights_tk.to(acc).unsqueeze(-1)).sum(1).to(y_pd.dtype)
