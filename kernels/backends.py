"""Dispatch backends for `moe_ts.moe.MoELayer` (cfg.backend): `get_backend(name)(layer, x_td) -> (y_td, Routing)`.

Every backend reads the layer's own gate and expert parameters (`layer.gate`, `layer.experts.w_gate`,
`w_up`, `w_down`), so the same weights give the same outputs and gradients as the `torch` reference;
the layer computes its aux/z losses and counts from the returned Routing.

- `torch`: the reference (`layer.route` → `moe_ts.moe.dispatch_reference`: argsort, per-expert loop, index_add).
- `triton`: fused routing kernel (logits, or states + centroids) → permute kernel → grouped SwiGLU
  (`torch._grouped_mm` where it runs, else the per-expert loop; see `kernels.grouped`) → un-permute kernel.
- `deepspeed`: DeepSpeed's `MOELayer` (GShard dispatch, capacity C = max(ceil(cf·k·T/E), min_capacity))
  with our gate plugged in; pairs past an expert's capacity are dropped, so it equals the reference only
  when cf is large enough that nothing drops (cf ≥ E/k guarantees it).
- `megablocks`: megablocks' dropless ops (sort, histogram, gather, scatter) and grouped GEMM on our
  weights; CUDA only, imported lazily.

Shape legend: T tokens, D width, F expert hidden, E experts, k top-k, C capacity per expert.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from moe_ts.moe import MoELayer, Routing

Backend = Callable[["MoELayer", Tensor], "tuple[Tensor, Routing]"]


def _routing_cls():
    from moe_ts.moe import Routing

    return Routing


# ----------------------------------------------------------------------------------------------
# torch (reference)
# ----------------------------------------------------------------------------------------------


def torch_backend(layer: "MoELayer", x_td: Tensor) -> "tuple[Tensor, Routing]":
    """The dropless reference dispatch of moe_ts.moe."""
    from moe_ts.moe import dispatch_reference

    routing = layer.route(x_td)
    return dispatch_reference(x_td, routing, layer.experts), routing


# ----------------------------------------------------------------------------------------------
# triton
# ----------------------------------------------------------------------------------------------


def triton_route(layer: "MoELayer", x_td: Tensor):
    """The layer's gate through the fused routing kernel: a RouteResult (ids, weights, scores, offsets, slots)."""
    from kernels.routing import route_centroids, route_logits
    from moe_ts.moe import CentroidGate

    cfg = layer.cfg
    if isinstance(layer.gate, CentroidGate):
        return route_centroids(x_td, layer.gate.centroids, cfg.top_k, cfg.weighting, layer.gate.select)
    return route_logits(layer.gate.scores(x_td), cfg.top_k, cfg.weighting)


def triton_backend(layer: "MoELayer", x_td: Tensor) -> "tuple[Tensor, Routing]":
    """Routing kernel → permute kernel → grouped SwiGLU GEMMs → un-permute kernel; no host sync on the grouped_mm path."""
    from kernels.grouped import grouped_swiglu
    from kernels.permute import permute, unpermute

    x_td = x_td.contiguous()
    r = triton_route(layer, x_td)
    ex = layer.experts
    x_pd = permute(x_td, r.slots)
    y_pd = grouped_swiglu(x_pd, r.offsets, ex.w_gate, ex.w_up, ex.w_down)
    y_td = unpermute(y_pd, r.slots, r.weights)
    return y_td, _routing_cls()(r.expert_ids, r.weights, r.scores, r.counts)


# ----------------------------------------------------------------------------------------------
# deepspeed
# ----------------------------------------------------------------------------------------------


class _PluggedGate(nn.Module):
    """A DeepSpeed MOELayer gate that hands over a routing computed by our gate (sparse-routes interface).

    Returns (l_aux, capacity, E, indices [k, T] int32 (−1 = dropped), locations [k, T] int32,
    gates [k, T] float32, exp_counts [E]). Locations are each pair's rank among the pairs of its
    expert in token order ("position" drop policy); the weights are the reference's, not
    renormalised after drops. l_aux is 0 here: MoELayer computes its own losses from the Routing.
    """

    def __init__(self, routing: "Routing", capacity_factor: float, min_capacity: int) -> None:
        super().__init__()
        self.routing = routing
        self.capacity_factor = capacity_factor
        self.min_capacity = min_capacity
        self.dropped: Tensor | None = None

    def _set_ep_group(self, ep_group) -> None:  # MOELayer API; this gate has no collective
        pass

    def forward(self, x_td: Tensor, used_token: Tensor | None = None, sparse_routes: bool = True,
                use_tutel: bool = False):
        from deepspeed.moe.sharded_moe import _capacity

        if not sparse_routes or use_tutel:
            raise RuntimeError("kernels.backends: the plugged DeepSpeed gate supports only MOELayer's sparse-routes path")
        ids_tk = self.routing.expert_ids
        num_tokens, top_k = ids_tk.shape
        num_experts = self.routing.scores.shape[1]
        capacity = _capacity(self.routing.scores, torch.tensor(self.capacity_factor * top_k),
                             torch.tensor(self.min_capacity))
        flat = ids_tk.reshape(-1)
        counts_e = torch.bincount(flat, minlength=num_experts)
        order = torch.argsort(flat, stable=True)
        starts_e = torch.cumsum(counts_e, 0) - counts_e
        rank = torch.empty_like(flat)
        rank[order] = torch.arange(flat.numel(), device=flat.device) - starts_e[flat[order]]
        rank_tk = rank.view(num_tokens, top_k)
        kept = rank_tk < capacity.to(rank_tk.device)
        self.dropped = (~kept).sum()
        indices = torch.where(kept, ids_tk, torch.full_like(ids_tk, -1))
        locations = torch.where(kept, rank_tk, torch.zeros_like(rank_tk))
        zero = x_td.new_zeros((), dtype=torch.float32)
        return (zero, capacity, num_experts, indices.t().contiguous().to(torch.int32),
                locations.t().contiguous().to(torch.int32), self.routing.weights.float().t().contiguous(), counts_e)


class _BatchedExperts(nn.Module):
    """DeepSpeed's expert call on the [ep, E, C, D] dispatch buffer, as batched GEMMs on our weights."""

    def __init__(self, experts: nn.Module) -> None:
        super().__init__()
        self.experts = experts

    def forward(self, x_gecd: Tensor) -> Tensor:
        ex = self.experts
        shape = x_gecd.shape
        x_ecd = x_gecd.reshape(-1, shape[-2], shape[-1])
        h = F.silu(torch.bmm(x_ecd, ex.w_gate)) * torch.bmm(x_ecd, ex.w_up)
        return torch.bmm(h, ex.w_down).reshape(shape)


def deepspeed_backend(layer: "MoELayer", x_td: Tensor, min_capacity: int = 4) -> "tuple[Tensor, Routing]":
    """DeepSpeed's MOELayer (one expert-parallel rank) with our gate's routing plugged in; capacity-based."""
    try:
        from deepspeed.moe.sharded_moe import MOELayer
    except ImportError as err:
        raise RuntimeError(f"kernels.backends: the deepspeed backend needs deepspeed ({err})") from err
    routing = layer.route(x_td)
    gate = _PluggedGate(routing, layer.cfg.capacity_factor, min_capacity)
    moe = MOELayer(gate, _BatchedExperts(layer.experts), ep_group_name=None, ep_size=1,
                   num_local_experts=layer.cfg.num_experts)
    y_td = moe(x_td, None)
    return y_td, routing


# ----------------------------------------------------------------------------------------------
# megablocks
# ----------------------------------------------------------------------------------------------


def megablocks_backend(layer: "MoELayer", x_td: Tensor) -> "tuple[Tensor, Routing]":
    """megablocks dMoE's grouped dropless path (ops.sort/histogram/gather/scatter + grouped_gemm) on our weights."""
    if not torch.cuda.is_available() or x_td.device.type != "cuda":
        raise RuntimeError(
            "kernels.backends: the megablocks backend needs a CUDA device and CUDA tensors (megablocks' ops are "
            "CUDA-only: its extension megablocks_ops and grouped_gemm); use backend 'torch' or 'triton' on CPU"
        )
    try:
        import megablocks.ops as mb_ops
        from megablocks import grouped_gemm_util as gg
    except ImportError as err:
        raise RuntimeError(
            f"kernels.backends: cannot import megablocks ({err}); build it on the GPU machine against its torch "
            "(pip install --no-deps --no-build-isolation megablocks grouped_gemm stanford-stk)"
        ) from err
    if gg.ops is None:
        raise RuntimeError("kernels.backends: megablocks is installed without grouped_gemm (pip install grouped_gemm)")
    routing = layer.route(x_td)
    num_experts, top_k = layer.cfg.num_experts, layer.cfg.top_k
    ids_p = routing.expert_ids.reshape(-1).int()
    w_p = routing.weights.reshape(-1)
    with torch.no_grad():
        bin_ids, indices = mb_ops.sort(ids_p, max(int(math.ceil(math.log2(num_experts))), 1))
        tokens_per_expert = mb_ops.histogram(ids_p, num_experts)
        bins = mb_ops.inclusive_cumsum(tokens_per_expert, 0)
        bins = bins.view(1) if bins.dim() == 0 else bins
    x_pd = mb_ops.gather(x_td.contiguous(), indices, bin_ids, bins, top_k)
    batch_sizes = tokens_per_expert.cpu().to(torch.long)  # grouped_gemm takes host batch sizes (one sync)
    ex = layer.experts
    h_pf = F.silu(gg.ops.gmm(x_pd, ex.w_gate, batch_sizes)) * gg.ops.gmm(x_pd, ex.w_up, batch_sizes)
    y_pd = gg.ops.gmm(h_pf, ex.w_down, batch_sizes)
    y_td = mb_ops.scatter(y_pd, indices, bin_ids, w_p, bins, top_k)
    return y_td, routing


BACKENDS: dict[str, Backend] = {
    "torch": torch_backend,
    "triton": triton_backend,
    "deepspeed": deepspeed_backend,
    "megablocks": megablocks_backend,
}


def get_backend(name: str) -> Backend:
    """The dispatch function for cfg.backend `name` (torch | triton | deepspeed | megablocks)."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise ValueError(f"kernels.backends: unknown MoE backend {name!r}; expected one of {sorted(BACKENDS)}") from None
