"""Fused top-k routing (docs/ARCHITECTURE.md §3): gate scores → expert ids, weights, counts, offsets, slots.

Three layers: `@triton.jit` kernels → `torch.autograd.Function`s → the functions `route_logits` /
`route_centroids`, returning the one routing record `kernels.topk.Routing`; the plain-torch references
(`route_reference`, `centroid_scores_reference`) live in `kernels.topk` (no triton) and are re-exported here.

Shape legend: T tokens, D model width, E experts, k top-k, NB route blocks (ceil(T / BLOCK_T)).

The forward is one fused pass over the scores (linear-gate logits [T, E], or token states [T, D] and
centroids [E, D] with the distance computed in the kernel): top-k by k rounds of arg-max, the routing
weights (softmax over the k selected scores, or softmax over all E then renormalised), and for the
dispatcher each pair's rank among the block's pairs of the same expert plus a per-block histogram.
A tiny scan kernel turns the histograms into counts [E], offsets [E+1] and block bases; a third
element-wise kernel gives every (token, slot) pair its row in the expert-contiguous order
(`slots_tk`), stable by token, exactly `argsort(expert_ids.flatten(), stable=True)`'s inverse.
No host sync anywhere.

Ties between equal scores pick the lowest expert id. Arithmetic is float32 inside the kernels
(bfloat16 values are widened on load).
"""
from __future__ import annotations

import torch
from torch import Tensor

import triton
import triton.language as tl

from kernels._common import alloc, check_2d, interpreted, pow2
from kernels.topk import WEIGHTINGS, Routing, centroid_scores_reference, check_route_args, route_reference

__all__ = ["Routing", "route_logits", "route_centroids", "route_reference", "centroid_scores_reference", "WEIGHTINGS"]
SELECTS = ("nearest", "farthest")


# ----------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------


@triton.jit
def _route_fwd_kernel(
    logits_ptr, x_ptr, c_ptr, scores_ptr,
    ids_ptr, w_ptr, rank_ptr, hist_ptr,
    T, E, D,
    stride_lt, stride_xt, stride_ce,
    K: tl.constexpr, CENTROID: tl.constexpr, SIGN: tl.constexpr, RENORM: tl.constexpr,
    RAW_DOT: tl.constexpr, ACC: tl.constexpr, IS_F64: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """One block of BLOCK_T tokens: scores → top-k ids/weights, in-block ranks, block histogram."""
    pid = tl.program_id(0)
    rows = pid * BLOCK_T + tl.arange(0, BLOCK_T)
    cols = tl.arange(0, BLOCK_E)
    row_ok = rows < T
    col_ok = cols < E
    rows64 = rows.to(tl.int64)
    tile_ok = row_ok[:, None] & col_ok[None, :]
    if CENTROID:
        # ‖x − c‖² = ‖x‖² + ‖c‖² − 2 x·c, the x·c tile on the tensor cores, float32 accumulation.
        acc = tl.zeros((BLOCK_T, BLOCK_E), dtype=ACC)
        xx = tl.zeros((BLOCK_T,), dtype=ACC)
        cc = tl.zeros((BLOCK_E,), dtype=ACC)
        for d0 in range(0, D, BLOCK_D):
            d = d0 + tl.arange(0, BLOCK_D)
            d_ok = d < D
            xt = tl.load(x_ptr + rows64[:, None] * stride_xt + d[None, :],
                         mask=row_ok[:, None] & d_ok[None, :], other=0.0)
            ct = tl.load(c_ptr + cols[:, None] * stride_ce + d[None, :],
                         mask=col_ok[:, None] & d_ok[None, :], other=0.0)
            if RAW_DOT:  # bf16 x bf16 products are exact in fp32: same result as the widened dot
                acc += tl.dot(xt, tl.trans(ct))
            elif IS_F64:
                acc += tl.dot(xt.to(ACC), tl.trans(ct.to(ACC)))
            else:
                acc += tl.dot(xt.to(ACC), tl.trans(ct.to(ACC)), input_precision="ieee")
            xf = xt.to(ACC)
            cf = ct.to(ACC)
            xx += tl.sum(xf * xf, axis=1)
            cc += tl.sum(cf * cf, axis=1)
        d2 = xx[:, None] + cc[None, :] - 2.0 * acc
        s = SIGN * tl.sqrt(tl.maximum(d2, 0.0))
        tl.store(scores_ptr + rows64[:, None] * E + cols[None, :], s, mask=tile_ok)
    else:
        s = tl.load(logits_ptr + rows64[:, None] * stride_lt + cols[None, :], mask=tile_ok, other=0.0).to(ACC)
    s = tl.where(col_ok[None, :], s, float("-inf"))

    # Pass 1: the selected set (for the softmax denominator) and the block's one-hot histogram.
    work = s
    chosen = tl.zeros((BLOCK_T, BLOCK_E), dtype=tl.int32)
    top = tl.max(s, axis=1)
    for i in tl.static_range(K):
        m = tl.max(work, axis=1)
        idx = tl.min(tl.where(work == m[:, None], cols[None, :], BLOCK_E), axis=1)
        hit = (cols[None, :] == idx[:, None]) & row_ok[:, None]
        chosen += hit.to(tl.int32)
        work = tl.where(cols[None, :] == idx[:, None], float("-inf"), work)
    expo = tl.where(col_ok[None, :], tl.exp(s - top[:, None]), 0.0)
    sel_sum = tl.sum(tl.where(chosen > 0, expo, 0.0), axis=1)
    if RENORM:
        probs = expo / tl.sum(expo, axis=1)[:, None]
        denom = tl.sum(tl.where(chosen > 0, probs, 0.0), axis=1)
    else:
        probs = expo
        denom = sel_sum
    denom = tl.where(row_ok, denom, 1.0)  # padding rows: keep the interpreter free of 0/0 warnings
    # Rank of each (token, expert) pair among this block's pairs of that expert, in token order.
    before = tl.cumsum(chosen, axis=0) - chosen
    tl.store(hist_ptr + pid * E + cols, tl.sum(chosen, axis=0), mask=col_ok)

    # Pass 2: the same selection again, now writing ids, weights and ranks slot by slot.
    work = s
    for i in tl.static_range(K):
        m = tl.max(work, axis=1)
        idx = tl.min(tl.where(work == m[:, None], cols[None, :], BLOCK_E), axis=1)
        onehot = cols[None, :] == idx[:, None]
        p_i = tl.sum(tl.where(onehot, probs, 0.0), axis=1)
        r_i = tl.sum(tl.where(onehot, before, 0), axis=1)
        tl.store(ids_ptr + rows64 * K + i, idx.to(tl.int64), mask=row_ok)
        tl.store(w_ptr + rows64 * K + i, p_i / denom, mask=row_ok)
        tl.store(rank_ptr + rows64 * K + i, r_i, mask=row_ok)
        work = tl.where(onehot, float("-inf"), work)


@triton.jit
def _route_scan_kernel(hist_ptr, base_ptr, counts_ptr, offsets_ptr, NB, E,
                       BLOCK_NB: tl.constexpr, BLOCK_E: tl.constexpr):
    """Per-block histograms [NB, E] → exclusive block bases [NB, E], counts [E], offsets [E+1]."""
    cols = tl.arange(0, BLOCK_E)
    col_ok = cols < E
    carry = tl.zeros((BLOCK_E,), dtype=tl.int32)
    for b0 in range(0, NB, BLOCK_NB):
        b = b0 + tl.arange(0, BLOCK_NB)
        ok = (b < NB)[:, None] & col_ok[None, :]
        h = tl.load(hist_ptr + b[:, None] * E + cols[None, :], mask=ok, other=0)
        tl.store(base_ptr + b[:, None] * E + cols[None, :], tl.cumsum(h, axis=0) - h + carry[None, :], mask=ok)
        carry += tl.sum(h, axis=0)
    tl.store(counts_ptr + cols, carry, mask=col_ok)
    tl.store(offsets_ptr + 1 + cols, tl.cumsum(carry, axis=0), mask=col_ok)
    tl.store(offsets_ptr + cols, tl.zeros((BLOCK_E,), dtype=tl.int32), mask=cols == 0)


@triton.jit
def _route_slots_kernel(ids_ptr, rank_ptr, base_ptr, offsets_ptr, slots_ptr, N, E,
                        K: tl.constexpr, ROUTE_BLOCK_T: tl.constexpr, BLOCK: tl.constexpr):
    """slot[t, i] = offsets[e] + base[block(t), e] + rank[t, i] with e = ids[t, i]."""
    j = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = j < N
    e = tl.load(ids_ptr + j, mask=ok, other=0).to(tl.int32)
    r = tl.load(rank_ptr + j, mask=ok, other=0)
    blk = (j // K) // ROUTE_BLOCK_T
    slot = tl.load(offsets_ptr + e, mask=ok, other=0) + tl.load(base_ptr + blk * E + e, mask=ok, other=0) + r
    tl.store(slots_ptr + j, slot, mask=ok)


@triton.jit
def _route_bwd_kernel(gw_ptr, w_ptr, ids_ptr, gs_ptr, scores_ptr, out_ptr, T, E,
                      K: tl.constexpr, HAS_GS: tl.constexpr, CENTROID: tl.constexpr, SIGN: tl.constexpr,
                      ACC: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_E: tl.constexpr):
    """Gradient to the scores [T, E] from the weights' gradient [T, k] (softmax over the selected scores).

    CENTROID: also adds the scores' own gradient and divides by the distance, giving the coefficient
    A[t, e] = ∂L/∂dist[t, e] · ∂dist/∂(x·c) so that ∂x = rowsum(A)·x − A·C and ∂C = colsum(A)·C − Aᵀ·X.
    """
    pid = tl.program_id(0)
    rows = pid * BLOCK_T + tl.arange(0, BLOCK_T)
    cols = tl.arange(0, BLOCK_E)
    row_ok = rows < T
    col_ok = cols < E
    rows64 = rows.to(tl.int64)
    tile_ok = row_ok[:, None] & col_ok[None, :]
    dot = tl.zeros((BLOCK_T,), dtype=ACC)
    for i in tl.static_range(K):
        w_i = tl.load(w_ptr + rows64 * K + i, mask=row_ok, other=0.0)
        g_i = tl.load(gw_ptr + rows64 * K + i, mask=row_ok, other=0.0).to(ACC)
        dot += w_i * g_i
    grad = tl.zeros((BLOCK_T, BLOCK_E), dtype=ACC)
    for i in tl.static_range(K):
        w_i = tl.load(w_ptr + rows64 * K + i, mask=row_ok, other=0.0)
        g_i = tl.load(gw_ptr + rows64 * K + i, mask=row_ok, other=0.0).to(ACC)
        e_i = tl.load(ids_ptr + rows64 * K + i, mask=row_ok, other=0).to(tl.int32)
        grad += tl.where(cols[None, :] == e_i[:, None], (w_i * (g_i - dot))[:, None], 0.0)
    if HAS_GS:
        grad += tl.load(gs_ptr + rows64[:, None] * E + cols[None, :], mask=tile_ok, other=0.0).to(ACC)
    if CENTROID:
        dist = SIGN * tl.load(scores_ptr + rows64[:, None] * E + cols[None, :], mask=tile_ok, other=1.0)
        grad = tl.where(dist > 0.0, grad * SIGN / tl.where(dist > 0.0, dist, 1.0), 0.0)
    tl.store(out_ptr + rows64[:, None] * E + cols[None, :], grad, mask=tile_ok)


# ----------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------


_TL = {torch.float32: tl.float32, torch.float64: tl.float64}


def _acc_dtype(t: Tensor) -> torch.dtype:
    """Kernel arithmetic dtype: float64 for float64 inputs (gradcheck), float32 otherwise."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _blocks(num_tokens: int, num_experts: int, width: int, interp: bool) -> tuple[int, int, int]:
    block_e = pow2(num_experts, 16)
    if interp:
        block_d = pow2(width, 16)
        block_t = min(pow2(num_tokens, 16), max(16, (1 << 17) // max(block_e, block_d if width > 1 else 1)))
        return block_t, block_e, block_d
    return 64, block_e, 64


def _route_forward(logits: Tensor | None, x: Tensor | None, c: Tensor | None, top_k: int, sign: int,
                   renorm: bool, block_t: int | None = None) -> tuple[Tensor, Tensor, Tensor | None, Tensor, Tensor, Tensor]:
    """Launch the three routing kernels. Returns ids [T,k] long, weights [T,k] and scores [T,E]|None in the accumulation dtype, counts, offsets, slots."""
    centroid = logits is None
    src = x if centroid else logits
    interp = interpreted(src)
    num_tokens = src.shape[0]
    num_experts = c.shape[0] if centroid else logits.shape[1]
    width = x.shape[1] if centroid else 1
    dev = src.device
    acc = _acc_dtype(src)
    ids = alloc((num_tokens, top_k), torch.long, dev)
    w_acc = alloc((num_tokens, top_k), acc, dev)
    rank = alloc((num_tokens, top_k), torch.int32, dev)
    scores_acc = alloc((num_tokens, num_experts), acc, dev) if centroid else None
    counts = alloc((num_experts,), torch.int32, dev)
    offsets = alloc((num_experts + 1,), torch.int32, dev)
    slots = alloc((num_tokens, top_k), torch.int32, dev)
    auto_t, block_e, block_d = _blocks(num_tokens, num_experts, width, interp)
    block_t = block_t or auto_t
    nb = triton.cdiv(num_tokens, block_t)
    hist = alloc((max(nb, 1), num_experts), torch.int32, dev)
    base = alloc(tuple(hist.shape), hist.dtype, hist.device)
    if num_tokens > 0:
        raw_dot = centroid and not interp and x.dtype == torch.bfloat16 and c.dtype == torch.bfloat16
        dummy = ids  # unused pointer slots
        _route_fwd_kernel[(nb,)](
            dummy if centroid else logits, x if centroid else dummy, c if centroid else dummy,
            scores_acc if centroid else dummy,
            ids, w_acc, rank, hist,
            num_tokens, num_experts, width,
            0 if centroid else logits.stride(0), x.stride(0) if centroid else 0, c.stride(0) if centroid else 0,
            K=top_k, CENTROID=centroid, SIGN=float(sign), RENORM=renorm, RAW_DOT=raw_dot, ACC=_TL[acc], IS_F64=acc == torch.float64,
            BLOCK_T=block_t, BLOCK_E=block_e, BLOCK_D=block_d,
        )
    else:
        hist.zero_()
    _route_scan_kernel[(1,)](hist, base, counts, offsets, nb, num_experts,
                             BLOCK_NB=min(pow2(nb), 64 if not interp else 4096), BLOCK_E=block_e)
    n_pairs = num_tokens * top_k
    if n_pairs > 0:
        block = min(pow2(n_pairs), 1 << 16) if interp else 1024
        _route_slots_kernel[(triton.cdiv(n_pairs, block),)](
            ids, rank, base, offsets, slots, n_pairs, num_experts, K=top_k, ROUTE_BLOCK_T=block_t, BLOCK=block)
    return ids, w_acc, scores_acc, counts, offsets, slots


def _route_backward_scores(grad_w: Tensor | None, w_acc: Tensor, ids: Tensor, grad_scores: Tensor | None,
                           scores_acc: Tensor | None, sign: int, num_experts: int) -> Tensor:
    """Launch the backward kernel: [T, E] float32 gradient to the scores (or the centroid coefficient A)."""
    num_tokens, top_k = ids.shape
    interp = interpreted(w_acc)
    out = alloc((num_tokens, num_experts), w_acc.dtype, w_acc.device)
    if num_tokens == 0:
        return out
    if grad_w is None:
        grad_w = torch.zeros_like(w_acc)
    block_e = pow2(num_experts, 16)
    block_t = min(pow2(num_tokens, 16), max(16, (1 << 17) // block_e)) if interp else 64
    gs = grad_scores.contiguous() if grad_scores is not None else out
    _route_bwd_kernel[(triton.cdiv(num_tokens, block_t),)](
        grad_w.contiguous(), w_acc, ids, gs, scores_acc if scores_acc is not None else out, out, num_tokens, num_experts,
        K=top_k, HAS_GS=grad_scores is not None, CENTROID=scores_acc is not None, SIGN=float(sign),
        ACC=_TL[w_acc.dtype], BLOCK_T=block_t, BLOCK_E=block_e)
    return out


class RouteLogitsFn(torch.autograd.Function):
    """logits [T, E] → ids, float32 weights, counts, offsets, slots; gradient flows to the logits via the weights."""

    @staticmethod
    def forward(ctx, logits_te: Tensor, top_k: int, renorm: bool, block_t: int | None):
        ids, w_acc, _, counts, offsets, slots = _route_forward(logits_te, None, None, top_k, -1, renorm, block_t)
        ctx.save_for_backward(ids, w_acc)
        ctx.logits_dtype = logits_te.dtype
        ctx.num_experts = logits_te.shape[1]
        ctx.mark_non_differentiable(ids, counts, offsets, slots)
        return ids, w_acc, counts, offsets, slots

    @staticmethod
    def backward(ctx, g_ids, grad_w_acc, g_counts, g_offsets, g_slots):
        ids, w_acc = ctx.saved_tensors
        grad = _route_backward_scores(grad_w_acc, w_acc, ids, None, None, 0, ctx.num_experts) if ctx.needs_input_grad[0] else None
        return (grad.to(ctx.logits_dtype) if grad is not None else None), None, None, None


class RouteCentroidsFn(torch.autograd.Function):
    """Token states [T, D] and centroids [E, D] → ids, float32 weights and scores (∓‖x − c‖), counts, offsets, slots."""

    @staticmethod
    def forward(ctx, x_td: Tensor, c_ed: Tensor, top_k: int, sign: int, renorm: bool, block_t: int | None):
        ids, w_acc, scores_acc, counts, offsets, slots = _route_forward(None, x_td, c_ed, top_k, sign, renorm, block_t)
        ctx.save_for_backward(x_td, c_ed, ids, w_acc, scores_acc)
        ctx.sign = sign
        ctx.mark_non_differentiable(ids, counts, offsets, slots)
        return ids, w_acc, scores_acc, counts, offsets, slots

    @staticmethod
    def backward(ctx, g_ids, grad_w_acc, grad_scores_acc, g_counts, g_offsets, g_slots):
        x_td, c_ed, ids, w_acc, scores_acc = ctx.saved_tensors
        need_x, need_c = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if not (need_x or need_c):
            return None, None, None, None, None, None
        coef_te = _route_backward_scores(grad_w_acc, w_acc, ids, grad_scores_acc, scores_acc, ctx.sign,
                                         c_ed.shape[0])
        acc = coef_te.dtype
        coef_te = coef_te.to(acc)
        xf, cf = x_td.to(acc), c_ed.to(acc)
        gx = (coef_te.sum(1, keepdim=True) * xf - coef_te @ cf).to(x_td.dtype) if need_x else None
        gc = (coef_te.sum(0).unsqueeze(1) * cf - coef_te.t() @ xf).to(c_ed.dtype) if need_c else None
        return gx, gc, None, None, None, None


def _check_block(block_t: int | None) -> None:
    if block_t is not None and (block_t < 16 or block_t & (block_t - 1)):
        raise ValueError(f"kernels.routing: block_t must be a power of two >= 16, got {block_t}")


def route_logits(logits_te: Tensor, top_k: int, weighting: str = "softmax_topk",
                 block_t: int | None = None) -> Routing:
    """Route from linear-gate logits [T, E]; weights in the logits' dtype, differentiable w.r.t. the logits.

    `block_t` (a power of two >= 16) overrides the tokens per program (tests use it to cover many blocks).
    """
    check_2d("logits_te", logits_te)
    _check_block(block_t)
    renorm = check_route_args(top_k, logits_te.shape[1], weighting)
    ids, w_acc, counts, offsets, slots = RouteLogitsFn.apply(logits_te, top_k, renorm, block_t)
    return Routing(ids, w_acc.to(logits_te.dtype), logits_te, counts, offsets, slots)


def route_centroids(x_td: Tensor, centroids_ed: Tensor, top_k: int, weighting: str = "softmax_topk",
                    select: str = "nearest", block_t: int | None = None) -> Routing:
    """Route from token states [T, D] and centroids [E, D]: score −‖x − c‖ (nearest) or +‖x − c‖ (farthest)."""
    _check_block(block_t)
    check_2d("x_td", x_td)
    check_2d("centroids_ed", centroids_ed)
    if x_td.shape[1] != centroids_ed.shape[1]:
        raise ValueError(f"kernels.routing: x_td width {x_td.shape[1]} != centroids width {centroids_ed.shape[1]}")
    if select not in SELECTS:
        raise ValueError(f"kernels.routing: unknown centroid select {select!r} (expected one of {SELECTS})")
    renorm = check_route_args(top_k, centroids_ed.shape[0], weighting)
    sign = -1 if select == "nearest" else 1
    ids, w_acc, s32, counts, offsets, slots = RouteCentroidsFn.apply(x_td, centroids_ed, top_k, sign, renorm, block_t)
    return Routing(ids, w_acc.to(x_td.dtype), s32.to(x_td.dtype), counts, offsets, slots)
