"""The capacity-based DeepSpeed `MOELayer` as an MoE dispatcher (docs/ARCHITECTURE.md §3), dispatcher "deepspeed".

Importing this module registers it with `moe_ts.dispatch`; `set_moe_dispatcher(model, "deepspeed",
capacity_factor=cf)` then builds one `MOELayer` per MoE layer, once. The layer's own gate routes
(so the same weights give the same routing as the torch reference) and DeepSpeed's GShard dispatch
(capacity C = max(ceil(cf·k·T/E), min_capacity)) moves the tokens: pairs past an expert's capacity
are dropped, so it equals the reference only when cf is large enough that nothing drops (cf ≥ E/k
guarantees it). One expert-parallel rank (ep_size = 1).

Shape legend: T tokens, D width, E experts, k top-k, C capacity per expert.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from kernels.grouped import swiglu
from kernels.topk import Routing
from moe_ts.dispatch import Dispatcher, register_dispatcher

if TYPE_CHECKING:
    from moe_ts.experts import GroupedExperts


class _PluggedGate(nn.Module):
    """A DeepSpeed MOELayer gate that hands over the routing our gate computed (sparse-routes interface).

    Returns (l_aux, capacity, E, indices [k, T] int32 (−1 = dropped), locations [k, T] int32,
    gates [k, T] float32, exp_counts [E]). Locations are each pair's rank among the pairs of its
    expert in token order ("position" drop policy); the weights are the reference's, not
    renormalised after drops. l_aux is 0 here: MoELayer computes its own losses from the Routing.
    """

    def __init__(self, capacity_factor: float, min_capacity: int) -> None:
        super().__init__()
        self.routing: Routing | None = None  # set by the dispatcher for each call
        self.capacity_factor = capacity_factor
        self.min_capacity = min_capacity
        self.dropped: Tensor | None = None

    def _set_ep_group(self, ep_group) -> None:  # MOELayer API; this gate has no collective
        pass

    def forward(self, x_td: Tensor, used_token: Tensor | None = None, sparse_routes: bool = True,
                use_tutel: bool = False):
        from deepspeed.moe.sharded_moe import _capacity

        if not sparse_routes or use_tutel:
            raise RuntimeError("pretrain.moe_deepspeed: the plugged gate supports only MOELayer's sparse-routes path")
        routing = self.routing
        ids_tk = routing.expert_ids
        num_tokens, top_k = ids_tk.shape
        num_experts = routing.scores.shape[1]
        capacity = _capacity(routing.scores, torch.tensor(self.capacity_factor * top_k),
                             torch.tensor(self.min_capacity))
        flat = ids_tk.reshape(-1)
        counts_e = routing.counts.long()
        starts_e = routing.offsets[:-1].long()
        # Rank of each pair among its expert's pairs in token order: slot minus the expert's first slot.
        rank_tk = routing.slots.long() - starts_e[flat].view(num_tokens, top_k)
        kept = rank_tk < capacity.to(rank_tk.device)
        self.dropped = (~kept).sum()
        indices = torch.where(kept, ids_tk, torch.full_like(ids_tk, -1))
        locations = torch.where(kept, rank_tk, torch.zeros_like(rank_tk))
        zero = x_td.new_zeros((), dtype=torch.float32)
        return (zero, capacity, num_experts, indices.t().contiguous().to(torch.int32),
                locations.t().contiguous().to(torch.int32), routing.weights.float().t().contiguous(), counts_e)


class _BatchedExperts(nn.Module):
    """DeepSpeed's expert call on the [ep, E, C, D] dispatch buffer, as batched GEMMs on our weights."""

    def __init__(self, experts: nn.Module) -> None:
        super().__init__()
        self.experts = experts

    def forward(self, x_gecd: Tensor) -> Tensor:
        ex = self.experts
        shape = x_gecd.shape
        x_ecd = x_gecd.reshape(-1, shape[-2], shape[-1])
        return swiglu(x_ecd, ex.w_gate, ex.w_up, ex.w_down, torch.bmm).reshape(shape)


class DeepSpeedDispatcher(Dispatcher):
    """DeepSpeed's MOELayer (one expert-parallel rank) over the layer's experts, built once."""

    name = "deepspeed"

    def __init__(self, experts: "GroupedExperts", capacity_factor: float = 1.25, min_capacity: int = 4) -> None:
        try:
            from deepspeed.moe.sharded_moe import MOELayer
        except ImportError as err:
            raise RuntimeError(f"pretrain.moe_deepspeed: the deepspeed dispatcher needs deepspeed ({err})") from err
        self.gate = _PluggedGate(capacity_factor, min_capacity)
        # A plain attribute of the dispatcher (not a submodule of the MoE layer): the weights stay the layer's.
        self.moe = MOELayer(self.gate, _BatchedExperts(experts), ep_group_name=None, ep_size=1,
                            num_local_experts=experts.num_experts)

    def __call__(self, x_td: Tensor, routing: Routing, experts: "GroupedExperts") -> Tensor:
        self.gate.routing = routing
        try:
            return self.moe(x_td, None)
        finally:
            self.gate.routing = None


register_dispatcher("deepspeed", lambda layer, capacity_factor=1.25, **_: DeepSpeedDispatcher(
    layer.experts, capacity_factor))
