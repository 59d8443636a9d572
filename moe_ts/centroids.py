"""Cluster-centroid gating from a pretrained model (docs/ARCHITECTURE.md §3, "Gates").

Pipeline: pretrain a model (dense or linear-gated) → collect, per layer, the token
representations entering that layer's FFN on a corpus sample → k-means with E clusters per layer
→ install the centroids in a centroid-gated MoE model → pretrain it. `moe-ts centroids`
(`pretrain/centroids.py`) runs the whole pipeline; `transfer_to_centroid_model` copies the source's
weights into the centroid-gated model:

- every weight outside the MoE layers (input projection, attention, norms, head) is copied;
- experts: a source with the same number of experts gives each cluster the source expert that its
  linear gate sent most of that cluster's tokens to (top-1 choice, matched one-to-one greedily by
  co-occurrence count, `match_experts`), so a token meets an expert it used to meet; a dense source
  (one expert per layer, its FFN) gives every expert a copy of that FFN ("sparse upcycling");
- the shared expert (when both models have one) is copied.

Shape legend: T tokens, D model width, E experts (clusters), L layers.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import torch
from torch import Tensor

from moe_ts.objectives import pretrain_loss
from moe_ts.router import CentroidGate
from moe_ts.packing import patchify

if TYPE_CHECKING:
    from moe_ts.network import MoiraiMoENetwork as MoiraiMoEModel


@torch.no_grad()
def collect_ffn_inputs(model: "MoiraiMoEModel", batches: Iterable[dict[str, Tensor]], max_tokens: int) -> list[Tensor]:
    """Per layer, up to `max_tokens` FFN inputs [T, D] of real patches of the batches.

    Each batch is a pretraining batch {target [B, N·P], sample_id [B, N]}; a real patch belongs to a
    sample (sample id > 0) and has at least one observed value (an all-missing patch is an input of
    zeros, not a state of the data).
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
            _, observed_bnp = patchify(batch["target"], model.config.patch_size)
            keep = ((batch["sample_id"] > 0) & observed_bnp.any(-1)).reshape(-1)
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


def match_experts(cluster_t: Tensor, expert_t: Tensor, num_experts: int) -> Tensor:
    """perm [E]: cluster e gets source expert perm[e], one-to-one, matched greedily by how many tokens
    of cluster e the source gate sent to that expert (largest count first; ties to the lower ids)."""
    counts_ee = torch.zeros(num_experts, num_experts, dtype=torch.long)
    counts_ee.index_put_((cluster_t.long().cpu(), expert_t.long().cpu()), torch.ones_like(cluster_t.cpu(), dtype=torch.long),
                         accumulate=True)
    perm = torch.full((num_experts,), -1, dtype=torch.long)
    free_c, free_e = set(range(num_experts)), set(range(num_experts))
    # stable order: by count descending, then cluster id, then expert id
    order = sorted(((-int(counts_ee[c, e]), c, e) for c in range(num_experts) for e in range(num_experts)))
    for _, c, e in order:
        if c in free_c and e in free_e:
            perm[c] = e
            free_c.discard(c)
            free_e.discard(e)
    return perm


@torch.no_grad()
def transfer_to_centroid_model(source: "MoiraiMoEModel", target: "MoiraiMoEModel", centroids: list[Tensor],
                               states: list[Tensor] | None = None) -> list[list[int]]:
    """Copy `source`'s weights into the centroid-gated `target` and install `centroids` (see the module
    docstring for which expert goes where); returns, per layer, the source expert of each target expert.

    `states` (per layer [T, D], the FFN inputs the centroids were fitted on) are needed to match the
    experts of an MoE source; a dense source (1 expert) needs none.
    """
    src_e, tgt_e = source.config.moe.num_experts, target.config.moe.num_experts
    if src_e not in (1, tgt_e):
        raise ValueError(f"the source has {src_e} experts per layer and the target {tgt_e}: experts are copied "
                         "from a dense FFN (1 expert) or from the same number of experts")
    src_state = source.state_dict()
    own = {k: v for k, v in src_state.items() if ".moe." not in k}
    missing, unexpected = target.load_state_dict(own, strict=False)
    not_moe = [k for k in missing if ".moe." not in k]
    if not_moe or unexpected:
        raise ValueError(f"source and target differ outside the MoE layers: {not_moe or unexpected}")
    init_centroid_gates(target, centroids)
    mapping = []
    for i, (s_layer, t_layer) in enumerate(zip(source.layers, target.layers)):
        if src_e == 1:
            perm = torch.zeros(tgt_e, dtype=torch.long)
        else:
            if states is None:
                raise ValueError("matching the experts of an MoE source needs the FFN inputs (states)")
            x_td = states[i].to(centroids[i].device)
            cluster_t = t_layer.moe.gate.scores(x_td.to(t_layer.moe.gate.centroids)).argmax(-1)
            expert_t = s_layer.moe.gate.scores(x_td.to(src_state[f"layers.{i}.ffn_norm.weight"])).argmax(-1)
            perm = match_experts(cluster_t, expert_t, tgt_e)
        for name in ("w_up", "w_gate", "w_down"):
            getattr(t_layer.moe.experts, name).copy_(getattr(s_layer.moe.experts, name)[perm])
        if s_layer.moe.shared is not None and t_layer.moe.shared is not None:
            t_layer.moe.shared.load_state_dict(s_layer.moe.shared.state_dict())
        mapping.append(perm.tolist())
    return mapping
