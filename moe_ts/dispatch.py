"""Dispatchers (docs/ARCHITECTURE.md §3): tokens + one `Routing` → expert outputs combined back per token.

A dispatcher is a runtime choice, never part of a model's config: `set_moe_dispatcher(model, name)`
installs one on every MoE layer (built once, not per forward). Local implementations here:

- `torch` (default, the reference): gather rows by expert, grouped experts, weighted `index_add_` back.
- `triton`: the fused routing kernel (`fused_routing`) → permute kernel → grouped experts → un-permute kernel.
- `megablocks`: megablocks' dropless sort/gather/scatter and grouped GEMM on the layer's weights (CUDA only).

The capacity-based DeepSpeed `MOELayer` is registered by `pretrain.moe_deepspeed` (the model library
never imports deepspeed); an expert-parallel dispatcher plugs in the same way.

Shape legend: T tokens, D model width, E experts, k top-k, P = T·k permuted rows.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import Tensor, nn

from kernels.grouped import swiglu
from kernels.topk import Routing

if TYPE_CHECKING:
    from moe_ts.experts import GroupedExperts


class Dispatcher:
    """Combine the experts' outputs for routed tokens: `dispatcher(x_td, routing, experts) -> y_td`."""

    name = "base"
    fused_routing = False  # True: the layer routes with the fused Triton kernel (it fills offsets/slots on device)

    def __call__(self, x_td: Tensor, routing: Routing, experts: "GroupedExperts") -> Tensor:
        raise NotImplementedError


class TorchDispatcher(Dispatcher):
    """Dropless reference: rows sorted by expert (the routing's slots), grouped experts, weighted scatter back."""

    name = "torch"

    def __call__(self, x_td: Tensor, routing: Routing, experts: "GroupedExperts") -> Tensor:
        num_pairs = routing.expert_ids.numel()
        top_k = routing.expert_ids.shape[1]
        # order_p[slot] = flat pair index: the inverse of the slots, i.e. argsort(expert_ids, stable) without a sort.
        order_p = torch.empty(num_pairs, dtype=torch.long, device=x_td.device)
        order_p[routing.slots.reshape(-1).long()] = torch.arange(num_pairs, device=x_td.device)
        token_of_p = order_p // top_k
        y_pd = experts(x_td[token_of_p], routing.offsets)
        weighted_pd = y_pd * routing.weights.reshape(-1)[order_p].unsqueeze(-1).to(y_pd.dtype)
        out_td = torch.zeros_like(x_td)
        out_td.index_add_(0, token_of_p, weighted_pd.to(x_td.dtype))
        return out_td


def dispatch_reference(x_td: Tensor, routing: Routing, experts: "GroupedExperts") -> Tensor:
    """The torch dispatcher as a function (test references)."""
    return TorchDispatcher()(x_td, routing, experts)


class TritonDispatcher(Dispatcher):
    """Permute kernel → grouped experts → un-permute kernel; no host sync on the grouped_mm path."""

    name = "triton"
    fused_routing = True

    def __call__(self, x_td: Tensor, routing: Routing, experts: "GroupedExperts") -> Tensor:
        from kernels.permute import permute, unpermute

        x_pd = permute(x_td.contiguous(), routing.slots)
        return unpermute(experts(x_pd, routing.offsets), routing.slots, routing.weights)


class MegablocksDispatcher(Dispatcher):
    """megablocks dMoE's grouped dropless path (ops.sort/histogram/gather/scatter + grouped_gemm) on our weights."""

    name = "megablocks"

    def __call__(self, x_td: Tensor, routing: Routing, experts: "GroupedExperts") -> Tensor:
        if not torch.cuda.is_available() or x_td.device.type != "cuda":
            raise RuntimeError(
                "moe_ts.dispatch: the megablocks dispatcher needs a CUDA device and CUDA tensors (megablocks' ops "
                "are CUDA-only: its extension megablocks_ops and grouped_gemm); use 'torch' or 'triton' on CPU"
            )
        try:
            import megablocks.ops as mb_ops
            from megablocks import grouped_gemm_util as gg
        except ImportError as err:
            raise RuntimeError(
                f"moe_ts.dispatch: cannot import megablocks ({err}); build it on the GPU machine against its torch "
                "(pip install --no-deps --no-build-isolation megablocks grouped_gemm stanford-stk)"
            ) from err
        if gg.ops is None:
            raise RuntimeError("moe_ts.dispatch: megablocks is installed without grouped_gemm (pip install grouped_gemm)")
        num_experts, top_k = experts.num_experts, routing.expert_ids.shape[1]
        ids_p = routing.expert_ids.reshape(-1).int()
        with torch.no_grad():
            bin_ids, indices = mb_ops.sort(ids_p, max(int(math.ceil(math.log2(num_experts))), 1))
            tokens_per_expert = mb_ops.histogram(ids_p, num_experts)
            bins = mb_ops.inclusive_cumsum(tokens_per_expert, 0)
            bins = bins.view(1) if bins.dim() == 0 else bins
        x_pd = mb_ops.gather(x_td.contiguous(), indices, bin_ids, bins, top_k)
        batch_sizes = tokens_per_expert.cpu().to(torch.long)  # grouped_gemm takes host batch sizes (one sync)
        y_pd = swiglu(x_pd, experts.w_gate, experts.w_up, experts.w_down,
                      lambda a, w: gg.ops.gmm(a, w, batch_sizes))
        return mb_ops.scatter(y_pd, indices, bin_ids, routing.weights.reshape(-1), bins, top_k)


DispatcherFactory = Callable[..., Dispatcher]  # factory(layer, **options) -> Dispatcher

_DISPATCHERS: dict[str, DispatcherFactory] = {
    "torch": lambda layer, **_: TorchDispatcher(),
    "triton": lambda layer, **_: TritonDispatcher(),
    "megablocks": lambda layer, **_: MegablocksDispatcher(),
}


def register_dispatcher(name: str, factory: DispatcherFactory) -> None:
    """Make `name` a dispatcher for `set_moe_dispatcher` (higher layers add theirs: deepspeed, expert parallel)."""
    _DISPATCHERS[name] = factory


def dispatcher_names() -> list[str]:
    return sorted(_DISPATCHERS)


def make_dispatcher(name: str, layer: nn.Module, **options: Any) -> Dispatcher:
    """The dispatcher `name` built for MoE layer `layer`."""
    if name not in _DISPATCHERS:
        hint = " (import pretrain.moe_deepspeed to register it)" if name == "deepspeed" else ""
        raise ValueError(f"moe_ts.dispatch: unknown MoE dispatcher {name!r}{hint}; expected one of {dispatcher_names()}")
    return _DISPATCHERS[name](layer, **options)


def set_moe_dispatcher(model: nn.Module, name: str, **options: Any) -> int:
    """Install dispatcher `name` on every MoE layer of `model` (or on `model` itself); returns how many."""
    layers = [m for m in model.modules() if isinstance(getattr(m, "dispatcher", None), Dispatcher)]
    for layer in layers:
        layer.dispatcher = make_dispatcher(name, layer, **options)
    return len(layers)
