"""Expert shards of an expert-parallel model (pretrain/expert_parallel.py; docs/ARCHITECTURE.md §4).

Checkpoints hold one file per expert-parallel rank, `experts_ep{G}_of{S}.safetensors` (`save_expert_shard` /
`load_expert_shard`, called by pretrain/checkpoint.py inside its atomic `tmp-step-N` folder); DeepSpeed's own
per-expert files are written from its `Experts` submodules, which this model does not have. `gather_experts`
rebuilds the full [E, ...] tensors on one rank for the exported Hugging Face folder.

Shape legend: E experts, El = E/S local experts of one rank.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn

from pretrain.errors import CheckpointError
from pretrain.expert_parallel import EXPERT_WEIGHTS, expert_group_name, expert_parallel_group, moe_layers


def local_expert_state(model: nn.Module) -> dict[str, Tensor]:
    """This rank's expert weights: {state-dict key: [El, ...] tensor} (detached, on the CPU)."""
    return {f"{name}.experts.{w}": getattr(layer.experts, w).detach().cpu().contiguous()
            for name, layer in moe_layers(model) for w in EXPERT_WEIGHTS}


def gather_experts(model: nn.Module) -> dict[str, Tensor] | None:
    """Every expert of every layer, {state-dict key: [E, ...]} on the CPU, gathered onto the first rank of the
    expert-parallel group (collective over that group; None on its other ranks). A model that is not sharded
    returns its own weights."""
    group = expert_parallel_group(model)
    local = local_expert_state(model)
    if group is None:
        return local
    device = next(model.parameters()).device
    first = dist.get_rank(group) == 0
    full = {}
    for key, w_local in local.items():
        w_dev = w_local.to(device)
        parts = [torch.empty_like(w_dev) for _ in range(dist.get_world_size(group))] if first else None
        dist.gather(w_dev, parts, dst=dist.get_global_rank(group, 0), group=group)
        if first:
            full[key] = torch.cat(parts, 0).cpu()
    return full if first else None


def expert_shard_name(ep_rank: int, ep_size: int) -> str:
    """File name of expert-parallel rank `ep_rank`'s expert weights inside a checkpoint."""
    return f"experts_ep{ep_rank}_of{ep_size}.safetensors"


def save_expert_shard(model: nn.Module, folder: Path) -> Path | None:
    """Write this rank's experts into `folder` if it is the first of its expert-data-parallel group
    (one file per expert-parallel rank); None when the model is not sharded or another rank writes it."""
    from safetensors.torch import save_file

    from deepspeed.utils import groups

    group = expert_parallel_group(model)
    if group is None:
        return None
    ep_size = dist.get_world_size(group)
    if groups._get_expert_data_parallel_rank(expert_group_name(ep_size)) != 0:
        return None
    path = Path(folder) / expert_shard_name(dist.get_rank(group), ep_size)
    tmp = path.with_name(path.name + ".tmp")
    save_file(local_expert_state(model), str(tmp))
    with open(tmp, "rb+") as f:  # on disk before the checkpoint folder is renamed into place
        os.fsync(f.fileno())
    tmp.replace(path)
    return path


def load_expert_shard(model: nn.Module, folder: Path) -> Path | None:
    """Copy this rank's saved experts from `folder` into `model` (None when the model is not sharded)."""
    from safetensors.torch import load_file

    group = expert_parallel_group(model)
    if group is None:
        return None
    path = Path(folder) / expert_shard_name(dist.get_rank(group), dist.get_world_size(group))
    if not path.is_file():
        raise CheckpointError(f"{path}: no expert shard for this expert-parallel rank")
    try:
        saved = load_file(str(path))
    except Exception as err:  # noqa: BLE001 - safetensors raises its own SafetensorError / OSError
        raise CheckpointError(f"{path}: unreadable expert shard ({err})") from None
    with torch.no_grad():
        for name, layer in moe_layers(model):
            for w in EXPERT_WEIGHTS:
                key, param = f"{name}.experts.{w}", getattr(layer.experts, w)
                if key not in saved or saved[key].shape != param.shape:
                    found = tuple(saved[key].shape) if key in saved else "nothing"
                    raise CheckpointError(f"{path}: expected {key} of shape {tuple(param.shape)}, found {found}")
                param.copy_(saved[key])
    return path
