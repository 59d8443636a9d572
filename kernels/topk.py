"""The routing record and the plain-torch top-k router (docs/ARCHITECTURE.md §3): no triton import.

`Routing` is the one description of a routing in the project: what the fused Triton router
(`kernels.routing`) and this reference both return, what every dispatcher reads and what the MoE
layer's losses and counts are computed from.

Shape legend: T tokens, E experts, k top-k.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

WEIGHTINGS = ("softmax_topk", "softmax_renorm")


@dataclass
class Routing:
    """Routing of T tokens to k of E experts, plus what the dispatcher needs."""

    expert_ids: Tensor  # [T, k] long, best first
    weights: Tensor  # [T, k] dtype of the scores' source (logits, or token states for centroids)
    scores: Tensor  # [T, E] gate scores (the logits, or ∓distance for centroids) in the same dtype
    counts: Tensor  # [E] int32, pairs routed to each expert
    offsets: Tensor  # [E+1] int32, start row of each expert's block in the permuted order; offsets[E] = T·k
    slots: Tensor  # [T, k] int32, row of pair (t, i) in the expert-contiguous order


def check_route_args(top_k: int, num_experts: int, weighting: str) -> bool:
    """Validate the router arguments; True for softmax_renorm."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"kernels.routing: unknown weighting {weighting!r} (expected one of {WEIGHTINGS})")
    if not 1 <= top_k <= num_experts:
        raise ValueError(f"kernels.routing: top_k must be in 1..{num_experts} (num_experts), got {top_k}")
    return weighting == "softmax_renorm"


def dispatch_fields(ids_tk: Tensor, num_experts: int) -> tuple[Tensor, Tensor, Tensor]:
    """counts [E], offsets [E+1] (int32) and slots [T, k] (int32) of expert ids, stable by token, no host sync."""
    flat = ids_tk.reshape(-1)
    counts = torch.bincount(flat, minlength=num_experts).to(torch.int32)
    offsets = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0, dtype=torch.int32)])
    slots = torch.empty_like(flat, dtype=torch.int32)
    slots[torch.argsort(flat, stable=True)] = torch.arange(flat.numel(), dtype=torch.int32, device=flat.device)
    return counts, offsets, slots.view_as(ids_tk)


def route_reference(scores_te: Tensor, top_k: int, weighting: str = "softmax_topk") -> Routing:
    """Plain-torch routing from scores [T, E] (float32 softmax, float64 for float64); weights in the scores' dtype.

    softmax_topk: softmax over the k selected scores; softmax_renorm: softmax over all E, keep the top k,
    renormalise them to sum to one (identical values, different gradients' path).
    """
    renorm = check_route_args(top_k, scores_te.shape[1], weighting)
    top_scores, ids = scores_te.topk(top_k, dim=-1)
    acc = torch.float64 if scores_te.dtype == torch.float64 else torch.float32
    if renorm:
        probs = torch.softmax(scores_te.to(acc), dim=-1).gather(1, ids)
        w = probs / probs.sum(dim=-1, keepdim=True)
    else:
        w = torch.softmax(top_scores.to(acc), dim=-1)
    counts, offsets, slots = dispatch_fields(ids, scores_te.shape[1])
    return Routing(ids, w.to(scores_te.dtype), scores_te, counts, offsets, slots)


def centroid_scores_reference(x_td: Tensor, centroids_ed: Tensor, select: str = "nearest") -> Tensor:
    """∓‖x − c‖ [T, E] by torch.cdist in float32 (float64 for float64 inputs), in x's dtype."""
    acc = torch.float64 if x_td.dtype == torch.float64 else torch.float32
    dist = torch.cdist(x_td.to(acc), centroids_ed.to(acc)).to(x_td.dtype)
    return -dist if select == "nearest" else dist
