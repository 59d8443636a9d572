"""Training objectives (docs/ARCHITECTURE.md §2): the packed next-patch pretraining loss.

`pretrain_loss` owns everything the network does not: patching, the leading-share statistics,
standardisation, the next-patch NLL over scored positions and the MoE auxiliary terms. The network
call goes through `forward` (a DeepSpeed engine in training, so its hooks run; the network itself
by default).

Shape legend: B batch, N patches, P patch size, D model width, L layers, E experts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from moe_ts.network import MoiraiMoENetwork
from moe_ts.packing import PackedLayout, masked_stats, patchify, standardise


@dataclass
class PretrainOutput:
    """Losses of one training batch."""

    loss: Tensor  # nll + aux_loss_coef·aux + z_loss_coef·z: what the optimizer minimises
    nll: Tensor  # mean NLL per observed target value (normalised scale)
    aux_loss: Tensor  # mean over layers of the load-balancing loss
    z_loss: Tensor  # mean over layers of the router z-loss
    expert_counts: Tensor  # [L, E] tokens·k routed per expert


def pretrain_loss(model: MoiraiMoENetwork, target: Tensor, sample_id: Tensor,
                  forward: Callable | None = None, input_noise: float = 0.0,
                  self_feed: float = 0.0) -> PretrainOutput:
    """Training loss of packed rows.

    target [B, N·P] raw values (NaN = missing); sample_id [B, N] (0 = padding, 1.. = packed series, at most N).
    Each sample is standardised with statistics of its leading ⌈stats_ratio·n⌉ patches, which get no
    loss; every other observed value is scored by the NLL of the predictions made at the K previous patches,
    except in samples whose statistics are degenerate (see `masked_stats`). `forward` runs the network
    (default: `model` itself; the trainer passes its DeepSpeed engine). `input_noise` > 0 adds Gaussian
    noise of that standard deviation (normalised units, torch's global RNG) to the observed input values
    only, never to the targets: a model trained so does not rely on its inputs being exact, as they are
    not when it decodes its own forecasts. `self_feed` > 0 is scheduled sampling: each scorable input
    patch is, with that probability, replaced by one draw from the model's own prediction of it (from a
    first, gradient-free pass over the true inputs), the input that sample-path decoding feeds back; the
    targets stay the true values, so the model learns to forecast from its own imperfect patches.
    """
    cfg = model.config
    forward = model if forward is None else forward
    values, observed = patchify(target, cfg.patch_size)
    if sample_id.shape != values.shape[:2]:
        raise ValueError(f"sample_id shape {tuple(sample_id.shape)} must be [B, N] = {tuple(values.shape[:2])}")
    layout = PackedLayout.from_sample_id(sample_id)
    stats_bn = layout.stats_patches(cfg.stats_ratio)
    loc, scale, informative = masked_stats(values, observed, stats_bn, layout.sample_id, cfg.min_scale)
    normed = standardise(values, observed, loc, scale, cfg.missing_values, layout.sample_id)

    inputs = normed
    mask = layout.attention_mask()
    if self_feed > 0:
        inputs = _feed_own_predictions(model, inputs, observed, layout, mask, stats_bn, self_feed)
    if input_noise > 0:
        inputs = normed + input_noise * torch.randn_like(normed) * observed
    hidden, _, moe_stats = forward(inputs, layout.position, mask,
                                   token_mask_bn=layout.sample_id > 0)
    # Position j predicts patches j+1..j+K (K = predict_patches) of the same sample, except those that
    # gave the statistics. Samples whose statistics are degenerate (constant or < 2 values) would score
    # targets normalised by the scale floor (|z| in the thousands) and swamp the loss: they get none.
    targets, weights = [], []
    n = values.shape[1]
    for k in range(1, cfg.predict_patches + 1):
        same = (layout.sample_id[:, k:] == layout.sample_id[:, :-k]) & (layout.sample_id[:, k:] > 0)
        scored_bn = same & ~stats_bn[:, k:] & informative[:, k:]
        weight_bnp = (observed[:, k:] & scored_bn[..., None]).to(hidden.dtype)
        pad = n - 1 - weight_bnp.shape[1]  # positions whose patch j+k lies past the row
        targets.append(torch.nn.functional.pad(normed[:, k:], (0, 0, 0, pad)))
        weights.append(torch.nn.functional.pad(weight_bnp, (0, 0, 0, pad)))
    target_bnq = torch.cat(targets, dim=-1)  # [B, N-1, K·P]: patch j+1, ..., patch j+K
    weight_bnq = torch.cat(weights, dim=-1)
    distr = model.head.distribution(hidden[:, :-1])
    log_prob = distr.log_prob(target_bnq)
    nll = -(log_prob * weight_bnq).sum() / weight_bnq.sum().clamp(min=1.0)

    aux = torch.stack([s.aux_loss for s in moe_stats]).mean()
    z = torch.stack([s.z_loss for s in moe_stats]).mean()
    loss = nll + cfg.moe.aux_loss_coef * aux + cfg.moe.z_loss_coef * z
    counts = torch.stack([s.counts for s in moe_stats])
    return PretrainOutput(loss=loss, nll=nll, aux_loss=aux, z_loss=z, expert_counts=counts)


def _feed_own_predictions(model: MoiraiMoENetwork, normed: Tensor, observed: Tensor, layout: PackedLayout,
                          mask: Tensor, stats_bn: Tensor, rate: float) -> Tensor:
    """normed [B, N, P] with each non-statistics patch j+1 of a sample replaced, with probability `rate`,
    by a draw from the prediction made at patch j over the true inputs (observed values only; missing
    values keep their fill). The pass runs the network module directly, without gradients, so it needs
    every parameter present on this rank (ZeRO stage 0-2, not 3). Uses torch's global RNG."""
    P = normed.shape[-1]
    with torch.no_grad():
        hidden, _, _ = model(normed, layout.position, mask, token_mask_bn=layout.sample_id > 0)
        draw_bnp = model.head.distribution(hidden[:, :-1]).sample()[..., :P]  # patch j+1 as predicted at j
    sid = layout.sample_id
    replaceable_bn = (sid[:, 1:] == sid[:, :-1]) & (sid[:, 1:] > 0) & ~stats_bn[:, 1:]
    chosen_bn = replaceable_bn & (torch.rand(replaceable_bn.shape, device=normed.device) < rate)
    swap_bnp = chosen_bn[..., None] & observed[:, 1:]
    fed = normed.clone()
    fed[:, 1:] = torch.where(swap_bnp, draw_bnp.to(normed.dtype), normed[:, 1:])
    return fed
