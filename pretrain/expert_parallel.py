"""Expert parallelism (docs/ARCHITECTURE.md §3-4): experts sharded over a process group, dropless all-to-all.

Each rank of an expert-parallel group of size G holds E/G consecutive experts (`shard_experts`); the
gate stays replicated. A forward on rank r: rows sorted by expert (the routing's slots) → the per-expert
counts exchanged (they are the split sizes: dropless, variable) → the rows all-to-all'd to the ranks
owning their experts → regrouped by local expert → the local grouped experts → the reverse path →
the weighted combine of the torch dispatcher. The all-to-alls are differentiable
(`torch.distributed.nn.functional.all_to_all_single`), so each local expert's gradient sums the
contributions of every rank's tokens.

DeepSpeed side (`setup_expert_parallel`): the expert-parallel and expert-data-parallel groups are
DeepSpeed's own (`deepspeed.utils.groups`, E + D layout: ranks r, r+G, r+2G... hold the same experts),
expert parameters are marked `allreduce=False` with their `group_name`, and the optimizer's parameter
groups are split with `split_params_into_different_moe_groups_for_optimizer`, so DeepSpeed (ZeRO 0/1/2)
reduces expert gradients only inside the expert-data-parallel group, averaged over the whole data-parallel
world like every other gradient. `DeepSpeedMoEMarker` tells the engine that the model has MoE layers.
Checkpoint shards and the gather for the export: pretrain/expert_shards.py.

The split sizes need one device→host read per layer (the collective takes host lists).

Shape legend: T tokens on this rank, D width, E experts, El = E/G local experts, G ranks in the group,
k top-k, P = T·k pairs, R rows received.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.nn.functional import all_to_all_single

from kernels.topk import Routing
from moe_ts.dispatch import Dispatcher, register_dispatcher

if TYPE_CHECKING:
    from moe_ts.experts import GroupedExperts


def regroup_index(counts_ge: Tensor) -> Tensor:
    """Row order taking a buffer laid out by (source rank g, local expert e) to (e, g): index [R]."""
    flat_lens = counts_ge.reshape(-1)
    starts_ge = (torch.cumsum(flat_lens, 0) - flat_lens).view_as(counts_ge)
    lens_eg = counts_ge.t().reshape(-1)
    starts_eg = starts_ge.t().reshape(-1)
    out_starts = torch.cumsum(lens_eg, 0) - lens_eg
    total = int(flat_lens.sum())
    return torch.repeat_interleave(starts_eg - out_starts, lens_eg, output_size=total) + torch.arange(
        total, device=counts_ge.device)


class ExpertParallelDispatcher(Dispatcher):
    """Dropless dispatch to experts sharded over `group` (all-to-all with variable split sizes)."""

    name = "expert_parallel"

    def __init__(self, num_experts: int, group: dist.ProcessGroup | None = None) -> None:
        self.group = group
        self.ep_size = dist.get_world_size(group)
        self.ep_rank = dist.get_rank(group)
        if num_experts % self.ep_size:
            raise ValueError(f"expert parallel: num_experts={num_experts} is not divisible by ep_size={self.ep_size}")
        self.num_local = num_experts // self.ep_size

    def __call__(self, x_td: Tensor, routing: Routing, experts: "GroupedExperts") -> Tensor:
        if experts.num_experts != self.num_local:
            raise RuntimeError(f"expert parallel: the layer holds {experts.num_experts} experts, expected its "
                               f"shard of {self.num_local} (call shard_experts first)")
        num_pairs, top_k = routing.expert_ids.numel(), routing.expert_ids.shape[1]
        order_p = torch.empty(num_pairs, dtype=torch.long, device=x_td.device)
        order_p[routing.slots.reshape(-1).long()] = torch.arange(num_pairs, device=x_td.device)
        token_of_p = order_p // top_k
        x_pd = x_td[token_of_p]  # sorted by global expert, so each destination rank's rows are contiguous

        counts_e = routing.counts.to(torch.long)
        recv_counts = torch.empty_like(counts_e)  # [G·El]: from source g, its pairs for my local expert e
        dist.all_to_all_single(recv_counts, counts_e, group=self.group)
        counts_ge = recv_counts.view(self.ep_size, self.num_local)
        send_splits = counts_e.view(self.ep_size, self.num_local).sum(1).tolist()
        recv_splits = counts_ge.sum(1).tolist()

        x_rd = all_to_all_single(x_pd.new_empty(sum(recv_splits), x_pd.shape[1]), x_pd.contiguous(),
                                 recv_splits, send_splits, group=self.group)
        index_r = regroup_index(counts_ge)
        per_expert = counts_ge.sum(0)
        offsets = torch.cat([per_expert.new_zeros(1), torch.cumsum(per_expert, 0)])
        y_local = experts(x_rd[index_r], offsets)
        y_rd = torch.empty_like(y_local).index_copy(0, index_r, y_local)  # back to (source, expert) order
        y_pd = all_to_all_single(y_rd.new_empty(num_pairs, y_rd.shape[1]), y_rd.contiguous(),
                                 send_splits, recv_splits, group=self.group)

        weighted_pd = y_pd * routing.weights.reshape(-1)[order_p].unsqueeze(-1).to(y_pd.dtype)
        out_td = torch.zeros_like(x_td)
        out_td.index_add_(0, token_of_p, weighted_pd.to(x_td.dtype))
        return out_td


EXPERT_WEIGHTS = ("w_up", "w_gate", "w_down")


def moe_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, layer) of every MoE layer of `model` (the modules that own a dispatcher), in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(getattr(m, "dispatcher", None), Dispatcher)]


def shard_experts(model: nn.Module, group: dist.ProcessGroup | None = None) -> int:
    """Keep only this rank's E/G experts in every MoE layer and install the expert-parallel dispatcher."""
    ep_size, ep_rank = dist.get_world_size(group), dist.get_rank(group)
    layers = [m for _, m in moe_layers(model)]
    for layer in layers:
        ex = layer.experts
        dispatcher = ExpertParallelDispatcher(ex.num_experts, group)
        lo, hi = ep_rank * dispatcher.num_local, (ep_rank + 1) * dispatcher.num_local
        for name in EXPERT_WEIGHTS:
            setattr(ex, name, nn.Parameter(getattr(ex, name).detach()[lo:hi].clone()))
        layer.dispatcher = dispatcher
    return len(layers)


register_dispatcher("expert_parallel",
                    lambda layer, group=None, **_: ExpertParallelDispatcher(layer.cfg.num_experts, group))


def expert_group_name(ep_size: int) -> str:
    """DeepSpeed's name of the expert-parallel / expert-data-parallel group pair of size `ep_size`."""
    return f"ep_size_{ep_size}"


def _deepspeed_moe_base() -> type:
    from deepspeed.moe.layer import MoE

    return MoE


class DeepSpeedMoEMarker(nn.Module):
    """Makes the DeepSpeed engine treat the model as an MoE model (`engine.has_moe_layers`), holding no weights.

    The engine recognises MoE models by instances of `deepspeed.moe.layer.MoE`; only then do ZeRO 1/2 and
    the plain all-reduce path honour the expert parameter groups. This module is made an instance of that
    class (`make_marker`) but computes nothing: the experts stay in our layers (their attribute names are
    the released checkpoints' keys). `num_local_experts = 0`: DeepSpeed's own per-expert files are written
    from its `Experts` submodules, which this model has none of; the expert shards are saved by
    pretrain/checkpoint.py instead. Its process groups are created before `deepspeed.initialize`.
    """

    def __init__(self, num_experts: int, ep_size: int) -> None:
        nn.Module.__init__(self)
        self.num_experts = num_experts
        self.ep_size = ep_size
        self.expert_group_name = expert_group_name(ep_size)
        self.num_local_experts = 0

    def set_deepspeed_parallelism(self, use_data_before_expert_parallel_: bool = False) -> None:
        """Engine hook; the groups exist already (`setup_expert_parallel`)."""

    def forward(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("DeepSpeedMoEMarker holds no computation")


def make_marker(num_experts: int, ep_size: int) -> nn.Module:
    """A `DeepSpeedMoEMarker` that is also an instance of `deepspeed.moe.layer.MoE`."""
    cls = type("DeepSpeedMoEMarker", (DeepSpeedMoEMarker, _deepspeed_moe_base()), {})
    return cls(num_experts, ep_size)


def setup_expert_parallel(model: nn.Module, ep_size: int) -> str:
    """Shard `model`'s experts over DeepSpeed's expert-parallel groups of size `ep_size`; returns the group name.

    Collective (every rank calls it, in the same order). Creates the groups, keeps this rank's E/ep_size
    experts per layer behind the expert-parallel dispatcher, marks the expert parameters
    (`allreduce=False`, `group_name`) and attaches a `DeepSpeedMoEMarker` as `model.deepspeed_moe_marker`.
    """
    from deepspeed.utils import groups

    name = expert_group_name(ep_size)
    if name not in groups._get_expert_parallel_group_dict():
        groups._create_expert_and_data_parallel(ep_size)
    group = groups._get_expert_parallel_group(name)
    layers = moe_layers(model)
    if not layers:
        raise ValueError("expert parallel: the model has no MoE layer")
    num_experts = layers[0][1].experts.num_experts
    shard_experts(model, group)
    for _, layer in layers:
        for p in layer.experts.parameters():
            p.allreduce = False
            p.group_name = name
    model.deepspeed_moe_marker = make_marker(num_experts, ep_size)
    return name


def expert_parallel_group(model: nn.Module) -> dist.ProcessGroup | None:
    """The expert-parallel group of `model`'s sharded experts (None: not sharded)."""
    for _, layer in moe_layers(model):
        if isinstance(layer.dispatcher, ExpertParallelDispatcher):
            return dist.group.WORLD if layer.dispatcher.group is None else layer.dispatcher.group
    return None
