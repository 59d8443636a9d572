"""Sparse mixture-of-experts feed-forward layer (docs/ARCHITECTURE.md §3).

The layer composes four parts: gate (`moe_ts.router`: scores → one `Routing` record) → dispatcher
(`moe_ts.dispatch`: a runtime choice, torch by default) → grouped experts (`moe_ts.experts`) →
optional shared expert. It computes its load-balancing and z losses and the expert counts from the
routing, with no host synchronisation.

Shape legend: T tokens, D model width, F expert hidden width, E experts, k top-k,
P = T·k permuted rows.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from kernels.topk import Routing
from moe_ts.config import MoEConfig
from moe_ts.dispatch import Dispatcher, TorchDispatcher
from moe_ts.experts import GroupedExperts, SharedExpert
from moe_ts.router import CentroidGate, LinearGate


@dataclass
class MoEStats:
    """Auxiliary losses and expert load of one MoE layer call."""

    aux_loss: Tensor  # scalar, Switch load-balancing loss E·Σ f_i·P_i (0 for the centroid gate)
    z_loss: Tensor  # scalar, router z-loss mean(logsumexp(scores)²) (0 for the centroid gate)
    counts: Tensor  # [E] long, tokens·k routed to each expert


class MoELayer(nn.Module):
    """Sparse MoE FFN: gate → top-k routing → dropless dispatch over SwiGLU experts (+ optional shared expert)."""

    def __init__(self, d_model: int, cfg: MoEConfig, init_std: float = 0.02) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.gate == "linear":
            self.gate: LinearGate | CentroidGate = LinearGate(d_model, cfg.num_experts)
        else:
            self.gate = CentroidGate(d_model, cfg.num_experts, cfg.centroid_select)
        self.experts = GroupedExperts(cfg.num_experts, d_model, cfg.d_ff, init_std)
        self.shared = SharedExpert(d_model, cfg.d_ff) if cfg.shared_expert else None
        self.dispatcher: Dispatcher = TorchDispatcher()  # runtime choice: moe_ts.dispatch.set_moe_dispatcher

    def route(self, x_td: Tensor, fused: bool = False) -> Routing:
        """The gate's top-k routing of the tokens (`fused`: the Triton routing kernel)."""
        return self.gate.route(x_td, self.cfg.top_k, self.cfg.weighting, fused)

    def forward(self, x_td: Tensor, token_mask_t: Tensor | None = None) -> tuple[Tensor, MoEStats]:
        """Outputs for every token; `token_mask_t` (True = real token) keeps padding out of the losses and counts."""
        routing = self.route(x_td, self.dispatcher.fused_routing)
        y_td = self.dispatcher(x_td, routing, self.experts)
        if self.shared is not None:
            y_td = y_td + self.shared(x_td)
        return y_td, self.stats(routing, token_mask_t)

    def stats(self, routing: Routing, token_mask_t: Tensor | None = None) -> MoEStats:
        """Switch load-balancing loss, router z-loss and expert counts (masked tokens left out; no host sync)."""
        num_experts = self.cfg.num_experts
        ids_tk = routing.expert_ids
        top_k = ids_tk.shape[1]
        if token_mask_t is None:
            counts_e = routing.counts.long()
            real = ids_tk.new_tensor(ids_tk.shape[0], dtype=torch.float32)
        else:
            mask_pairs = token_mask_t.to(torch.long).repeat_interleave(top_k)
            counts_e = torch.zeros(num_experts, dtype=torch.long, device=ids_tk.device)
            counts_e.index_add_(0, ids_tk.reshape(-1), mask_pairs)
            real = token_mask_t.sum().float()
        if not self.gate.balance_losses or ids_tk.shape[0] == 0:
            zero = routing.scores.new_zeros((), dtype=torch.float32)
            return MoEStats(zero, zero, counts_e)
        scores = routing.scores.float()
        probs_te = torch.softmax(scores, dim=-1)
        lse2_t = torch.logsumexp(scores, dim=-1).pow(2)
        if token_mask_t is None:
            mean_probs_e, z = probs_te.mean(dim=0), lse2_t.mean()
        else:  # masked means without boolean indexing (no device→host sync for the number of real tokens)
            keep_t = token_mask_t.to(scores.dtype)
            mean_probs_e = (probs_te * keep_t[:, None]).sum(dim=0) / real.clamp(min=1.0)
            z = (lse2_t * keep_t).sum() / real.clamp(min=1.0)
        frac_e = counts_e.float() / (real * top_k).clamp(min=1.0)
        aux = num_experts * (frac_e.detach() * mean_probs_e).sum()
        return MoEStats(aux, z, counts_e)
