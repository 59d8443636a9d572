"""Cluster-centroid gating from a pretrained model (docs/ARCHITECTURE.md §3, "Gates").

Pipeline: pretrain a model (dense or linear-gated) → collect, per layer, the token
representations entering that layer's FFN on a corpus sample → k-means with E clusters per layer
→ install the centroids in a centroid-gated MoE model → pretrain it.

Shape legend: T tokens, D model width, E experts (clusters), L layers.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import torch
from torch import Tensor

from moe_ts.objectives import pretrain_loss
from moe_ts.router import CentroidGate

if TYPE_CHECKING:
    from moe_ts.network import MoiraiMoENetwork as MoiraiMoEModel


@torch.no_grad()
def collect_ffn_inputs(model: "MoiraiMoEModel", batches: Iterable[dict[str, Tensor]], max_tokens: int) -> list[Tensor]:
    """Per layer, up to `max_tokens` FFN inputs [T, D] of real (non-padding) patches of the batches.

    Each batch is a pretraining batch {target [B, N·P], sample_id [B, N]}.
    """
    captured: list[list[Tensor]] = [[] for _ in model.layers]
    current: list[Tensor | None] = [None] * len(model.layers)
    hooks = [
        layer.moe.register_forward_pre_hook(lambda _m, args, i=i: current.__setitem__(i, args[0].detach()))
        for i, layer in enumerate(model.layers)
    ]
    was_training = model.training
    model.eval()
    try:
        taken = 0
        for batch in batches:
            pretrain_loss(model, batch["target"], batch["sample_id"])  # the training forward, hooks capture
            keep = (batch["sample_id"] > 0).reshape(-1)
            for i, x_td in enumerate(current):
                assert x_td is not None
                captured[i].append(x_td[keep][: max_tokens - taken])
            taken += min(int(keep.sum()), max_tokens - taken)
            if taken >= max_tokens:
                break
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    if not captured[0]:
        raise ValueError("collect_ffn_inputs: no batches given")
    return [torch.cat(chunks) for chunks in captured]


def kmeans(x_td: Tensor, num_clusters: int, iters: int = 50, batch_size: int | None = None, seed: int = 0) -> Tensor:
    """Centroids [E, D] by k-means++ seeding then Lloyd (full batch) or mini-batch (Sculley 2010) updates."""
    num_points = x_td.shape[0]
    if num_points < num_clusters:
        raise ValueError(f"k-means needs at least {num_clusters} points, got {num_points}")
    gen = torch.Generator(device="cpu").manual_seed(seed)
    x = x_td.float()
    first = int(torch.randint(num_points, (1,), generator=gen))
    centroids = [x[first]]
    min_dist = torch.cdist(x, x[first:first + 1]).squeeze(1) ** 2
    for _ in range(1, num_clusters):
        probs = min_dist / min_dist.sum() if min_dist.sum() > 0 else torch.full_like(min_dist, 1.0 / num_points)
        idx = int(torch.multinomial(probs.cpu(), 1, generator=gen))
        centroids.append(x[idx])
        min_dist = torch.minimum(min_dist, torch.cdist(x, x[idx:idx + 1]).squeeze(1) ** 2)
    c = torch.stack(centroids)
    counts = torch.zeros(num_clusters, device=x.device)
    for _ in range(iters):
        if batch_size is None or batch_size >= num_points:
            assign = torch.cdist(x, c).argmin(1)
            sums = torch.zeros_like(c).index_add_(0, assign, x)
            n = torch.bincount(assign, minlength=num_clusters).float()
            c = torch.where(n[:, None] > 0, sums / n.clamp(min=1)[:, None], c)
        else:
            batch = x[torch.randint(num_points, (batch_size,), generator=gen).to(x.device)]
            assign = torch.cdist(batch, c).argmin(1)
            n = torch.bincount(assign, minlength=num_clusters).float()
            sums = torch.zeros_like(c).index_add_(0, assign, batch)
            counts += n
            lr = (n / counts.clamp(min=1))[:, None]
            c = torch.where(n[:, None] > 0, (1 - lr) * c + lr * sums / n.clamp(min=1)[:, None], c)
    return c


def init_centroid_gates(model: "MoiraiMoEModel", centroids: list[Tensor], trainable: bool = False) -> None:
    """Install per-layer centroids [E, D] in a centroid-gated model (fixed buffers unless `trainable`)."""
    if len(centroids) != len(model.layers):
        raise ValueError(f"got centroids for {len(centroids)} layers, the model has {len(model.layers)}")
    for i, (layer, c) in enumerate(zip(model.layers, centroids)):
        if not isinstance(layer.moe.gate, CentroidGate):
            raise ValueError(f"layer {i} has a {type(layer.moe.gate).__name__}; set moe.gate: centroid in the config")
        layer.moe.gate.set_centroids(c, trainable=trainable)
