"""Sparse mixture-of-experts feed-forward layer (DESIGN §3, §4).

Four parts: gate (scores) → router (top-k ids and weights) → dispatcher (permute, grouped
experts, un-permute) → optional shared expert. The `torch` backend below is the dropless
reference; other backends (`triton`, `deepspeed`, `megablocks`) live in `kernels.backends` and
are imported lazily so this module never imports deepspeed.

Shape legend: T tokens, D model width, F expert hidden width, E experts, k top-k,
P = T·k permuted rows.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moe_ts.config import MoEConfig


@dataclass
class Routing:
    """Which experts each token goes to and with what weight."""

    expert_ids: Tensor  # [T, k] long
    weights: Tensor  # [T, k], dtype of the tokens
    scores: Tensor  # [T, E] gate scores (linear logits, or ∓distance for centroids)
    counts: Tensor | None = None  # [E] tokens·k per expert when the backend already has them (no bincount sync)


@dataclass
class MoEStats:
    """Auxiliary losses and expert load of one MoE layer call."""

    aux_loss: Tensor  # scalar, Switch load-balancing loss E·Σ f_i·P_i (0 for the centroid gate)
    z_loss: Tensor  # scalar, router z-loss mean(logsumexp(scores)²) (0 for the centroid gate)
    counts: Tensor  # [E] long, tokens·k routed to each expert


class LinearGate(nn.Module):
    """softmax(W·x) router scores; trained with load-balancing and z losses."""

    def __init__(self, d_model: int, num_experts: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d_model, num_experts, bias=False)

    def scores(self, x_td: Tensor) -> Tensor:
        return self.proj(x_td)


class CentroidGate(nn.Module):
    """Cluster-centroid gate: score = −‖x − c‖ (nearest, default) or +‖x − c‖ (farthest, uni2ts #211).

    The centroids are a buffer (fixed in pretraining) filled from k-means over a pretrained model's
    token representations; `trainable=True` turns them into a parameter for finetuning.
    """

    def __init__(self, d_model: int, num_experts: int, select: str = "nearest") -> None:
        super().__init__()
        if select not in ("nearest", "farthest"):
            raise ValueError(f"centroid_select must be 'nearest' or 'farthest', got {select!r}")
        self.select = select
        self.register_buffer("centroids", torch.randn(num_experts, d_model) / d_model**0.5)

    def set_centroids(self, centroids_ed: Tensor, trainable: bool = False) -> None:
        """Install k-means centroids [E, D]."""
        if centroids_ed.shape != self.centroids.shape:
            raise ValueError(f"centroids must have shape {tuple(self.centroids.shape)}, got {tuple(centroids_ed.shape)}")
        data = centroids_ed.detach().to(self.centroids)
        del self.centroids
        if trainable:
            self.centroids = nn.Parameter(data)
        else:
            self.register_buffer("centroids", data)

    def scores(self, x_td: Tensor) -> Tensor:
        dist_te = torch.cdist(x_td.float(), self.centroids.float()).to(x_td.dtype)
        return -dist_te if self.select == "nearest" else dist_te


def route_reference(scores_te: Tensor, top_k: int, weighting: str) -> tuple[Tensor, Tensor]:
    """Top-k expert ids and weights from gate scores.

    softmax_topk: softmax over the k selected scores; softmax_renorm: softmax over all E, keep the
    top k, renormalise them to sum to one (identical values, different gradients' path).
    """
    if weighting == "softmax_topk":
        top_scores, ids_tk = scores_te.topk(top_k, dim=-1)
        weights_tk = torch.softmax(top_scores.float(), dim=-1)
    elif weighting == "softmax_renorm":
        probs_te = torch.softmax(scores_te.float(), dim=-1)
        top_probs, ids_tk = probs_te.topk(top_k, dim=-1)
        weights_tk = top_probs / top_probs.sum(dim=-1, keepdim=True)
    else:
        raise ValueError(f"unknown routing weighting {weighting!r} (softmax_topk | softmax_renorm)")
    return ids_tk, weights_tk.to(scores_te.dtype)


class Experts(nn.Module):
    """E SwiGLU experts, weights stacked for grouped GEMMs: e(x) = (silu(x·W_gate) ⊙ x·W_up)·W_down."""

    def __init__(self, num_experts: int, d_model: int, d_ff: int, init_std: float = 0.02) -> None:
        super().__init__()
        self.w_up = nn.Parameter(torch.randn(num_experts, d_model, d_ff) * init_std)
        self.w_gate = nn.Parameter(torch.randn(num_experts, d_model, d_ff) * init_std)
        self.w_down = nn.Parameter(torch.randn(num_experts, d_ff, d_model) * init_std)

    @property
    def num_experts(self) -> int:
        return self.w_up.shape[0]

    def grouped(self, x_pd: Tensor, counts_e: Tensor) -> Tensor:
        """Apply expert e to its contiguous block of rows; rows are sorted by expert, counts_e sizes the blocks."""
        # One host sync for the split sizes: acceptable in the reference path (see kernels/ for the fused one).
        chunks = torch.split(x_pd, counts_e.tolist())
        out = []
        for e, chunk in enumerate(chunks):
            if chunk.shape[0] == 0:
                continue
            h = F.silu(chunk @ self.w_gate[e]) * (chunk @ self.w_up[e])
            out.append(h @ self.w_down[e])
        return torch.cat(out, dim=0) if out else x_pd.new_zeros(0, self.w_down.shape[-1])

    def single(self, x_d: Tensor, e: int) -> Tensor:
        """Expert e on any batch of rows (used by test references)."""
        return (F.silu(x_d @ self.w_gate[e]) * (x_d @ self.w_up[e])) @ self.w_down[e]


def dispatch_reference(x_td: Tensor, routing: Routing, experts: Experts) -> Tensor:
    """Dropless dispatch: sort the T·k (token, expert) pairs by expert, grouped expert GEMMs, weighted scatter back."""
    num_tokens, top_k = routing.expert_ids.shape
    flat_ids_p = routing.expert_ids.reshape(-1)
    order_p = torch.argsort(flat_ids_p, stable=True)
    token_of_p = order_p // top_k
    counts_e = torch.bincount(flat_ids_p, minlength=experts.num_experts)
    y_pd = experts.grouped(x_td[token_of_p], counts_e)
    weighted_pd = y_pd * routing.weights.reshape(-1)[order_p].unsqueeze(-1).to(y_pd.dtype)
    out_td = torch.zeros_like(x_td)
    out_td.index_add_(0, token_of_p, weighted_pd.to(x_td.dtype))
    return out_td


class SharedExpert(nn.Module):
    """Time-MoE-style always-on SwiGLU expert with a sigmoid gate."""

    def __init__(self, d_model: int, d_ff: int) -> None:
        super().__init__()
        self.up = nn.Linear(d_model, d_ff, bias=False)
        self.gate_proj = nn.Linear(d_model, d_ff, bias=False)
        self.down = nn.Linear(d_ff, d_model, bias=False)
        self.sigmoid_gate = nn.Linear(d_model, 1, bias=False)

    def forward(self, x_td: Tensor) -> Tensor:
        y = self.down(F.silu(self.gate_proj(x_td)) * self.up(x_td))
        return torch.sigmoid(self.sigmoid_gate(x_td)) * y


Backend = Callable[["MoELayer", Tensor], tuple[Tensor, Routing]]


class MoELayer(nn.Module):
    """Sparse MoE FFN: gate → top-k router → dropless dispatch over SwiGLU experts (+ optional shared expert)."""

    def __init__(self, d_model: int, cfg: MoEConfig, init_std: float = 0.02) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.gate == "linear":
            self.gate: LinearGate | CentroidGate = LinearGate(d_model, cfg.num_experts)
        else:
            self.gate = CentroidGate(d_model, cfg.num_experts, cfg.centroid_select)
        self.experts = Experts(cfg.num_experts, d_model, cfg.d_ff, init_std)
        self.shared = SharedExpert(d_model, cfg.d_ff) if cfg.shared_expert else None
        self._backend: Backend | None = None

    def route(self, x_td: Tensor) -> Routing:
        scores_te = self.gate.scores(x_td)
        ids_tk, weights_tk = route_reference(scores_te, self.cfg.top_k, self.cfg.weighting)
        return Routing(ids_tk, weights_tk.to(x_td.dtype), scores_te)

    def _torch_backend(self, x_td: Tensor) -> tuple[Tensor, Routing]:
        routing = self.route(x_td)
        return dispatch_reference(x_td, routing, self.experts), routing

    def backend(self) -> Backend:
        """The dispatch implementation named by cfg.backend (resolved once, lazily)."""
        if self._backend is None:
            if self.cfg.backend == "torch":
                self._backend = MoELayer._torch_backend
            else:
                from kernels.backends import get_backend  # lazy: may import deepspeed / megablocks

                self._backend = get_backend(self.cfg.backend)
        return self._backend

    def forward(self, x_td: Tensor, token_mask_t: Tensor | None = None) -> tuple[Tensor, MoEStats]:
        """Outputs for every token; `token_mask_t` (True = real token) keeps padding out of the losses and counts."""
        y_td, routing = self.backend()(self, x_td)
        if self.shared is not None:
            y_td = y_td + self.shared(x_td)
        return y_td, self.stats(routing, token_mask_t)

    def stats(self, routing: Routing, token_mask_t: Tensor | None = None) -> MoEStats:
        """Switch load-balancing loss, router z-loss and expert counts from a routing (masked tokens left out)."""
        num_experts = self.cfg.num_experts
        if token_mask_t is not None:
            routing = Routing(routing.expert_ids[token_mask_t], routing.weights[token_mask_t], routing.scores[token_mask_t])
        if routing.counts is not None:
            counts_e = routing.counts.long()
        else:
            counts_e = torch.bincount(routing.expert_ids.reshape(-1), minlength=num_experts)
        if isinstance(self.gate, CentroidGate) or routing.scores.shape[0] == 0:
            zero = routing.scores.new_zeros((), dtype=torch.float32)
            return MoEStats(zero, zero, counts_e)
        scores = routing.scores.float()
        probs_te = torch.softmax(scores, dim=-1)
        frac_e = counts_e.float() / max(routing.expert_ids.numel(), 1)
        aux = num_experts * (frac_e.detach() * probs_te.mean(dim=0)).sum()
        z = torch.logsumexp(scores, dim=-1).pow(2).mean()
        return MoEStats(aux, z, counts_e)
