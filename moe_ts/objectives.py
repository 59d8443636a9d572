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
from moe_ts.packing import PackedLayout, masked_stats, patchify, standardise, time_causal_mask, variate_series_ids
from moe_ts.patch_targets import masked_nll, shifted_targets


@dataclass
class PretrainOutput:
    """Losses of one training batch."""

    loss: Tensor  # nll + aux_loss_coef·aux + z_loss_coef·z: what the optimizer minimises
    nll: Tensor  # mean NLL per observed target value (normalised scale)
    aux_loss: Tensor  # mean over layers of the load-balancing loss
    z_loss: Tensor  # mean over layers of the router z-loss
    expert_counts: Tensor  # [L, E] tokens·k routed per expert
    horizon_nll: Tensor | None = None  # the long-horizon head's mean NLL (None without one); in loss × horizon_weight


def pretrain_loss(model: MoiraiMoENetwork, target: Tensor, sample_id: Tensor,
                  forward: Callable | None = None, input_noise: float = 0.0,
                  self_feed: float = 0.0, horizon_weight: float = 1.0,
                  variate_id: Tensor | None = None) -> PretrainOutput:
    """Training loss of packed rows.

    target [B, N·P] raw values (NaN = missing); sample_id [B, N] (0 = padding, 1.. = packed series, at most N).
    variate_id [B, N] (None: every sample is univariate) marks any-variate samples packed variate-major, each
    variate a run of the same patches' time window: every variate is standardised and scored on its own, patches
    are numbered by time id, a token sees every variate of its sample up to its own time id
    (`packing.time_causal_mask`, uni2ts' causality) and the variate ids feed the variate bias when the model has it.
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
    A model with a long-horizon head (`horizon_patches` > 0) adds `horizon_weight` × that head's NLL to the loss.
    """
    cfg = model.config
    forward = model if forward is None else forward
    values, observed = patchify(target, cfg.patch_size)
    if sample_id.shape != values.shape[:2]:
        raise ValueError(f"sample_id shape {tuple(sample_id.shape)} must be [B, N] = {tuple(values.shape[:2])}")
    if variate_id is not None and variate_id.shape != sample_id.shape:
        raise ValueError(f"variate_id shape {tuple(variate_id.shape)} must be sample_id's {tuple(sample_id.shape)}")
    # Any-variate rows: each variate of a sample is a series for the layout (statistics, positions = time ids,
    # next-patch pairs), and the mask lets a token see every variate of its sample up to its own time id.
    layout = PackedLayout.from_sample_id(sample_id if variate_id is None else variate_series_ids(sample_id, variate_id))
    stats_bn = layout.stats_patches(cfg.stats_ratio)
    loc, scale, informative = masked_stats(values, observed, stats_bn, layout.sample_id, cfg.min_scale)
    normed = standardise(values, observed, loc, scale, cfg.missing_values, layout.sample_id)

    inputs = normed
    mask = layout.attention_mask() if variate_id is None else time_causal_mask(sample_id, layout.position)
    if self_feed > 0:
        inputs = _feed_own_predictions(model, inputs, observed, layout, mask, stats_bn, self_feed, variate_id)
    if input_noise > 0:
        inputs = normed + input_noise * torch.randn_like(normed) * observed
    variates = {} if variate_id is None else {"variate_bn": variate_id}  # a univariate `forward` needs no such argument
    hidden, _, moe_stats = forward(inputs, layout.position, mask, token_mask_bn=layout.sample_id > 0, **variates)
    # Position j predicts patches j+1..j+K (K = predict_patches) of the same sample, except those that
    # gave the statistics. Samples whose statistics are degenerate (constant or < 2 values) would score
    # targets normalised by the scale floor (|z| in the thousands) and swamp the loss: they get none.
    # normed's dtype, not hidden's: under bf16 autocast the residual stream is bf16, and bf16 targets and weights
    # would round the scored values and the NLL's denominator (2412 -> 2416 weights in one measured batch).
    target_bnq, weight_bnq = shifted_targets(normed, observed, layout.sample_id, stats_bn, informative,
                                             cfg.predict_patches, normed.dtype)  # [B, N-1, K·P]
    distr = model.head.distribution(hidden[:, :-1])
    log_prob = distr.log_prob(target_bnq)
    nll = masked_nll(log_prob, weight_bnq)
    horizon_nll = None  # the long-horizon head's (horizon_patches > 0): the same rules over patches j+1..j+K
    if getattr(model, "horizon_head", None) is not None:
        h_target_bnq, h_weight_bnq = shifted_targets(normed, observed, layout.sample_id, stats_bn, informative,
                                                     cfg.horizon_patches, normed.dtype)
        h_log_prob = model.horizon_head.distribution(hidden[:, :-1]).log_prob(h_target_bnq)
        horizon_nll = masked_nll(h_log_prob, h_weight_bnq)

    aux = torch.stack([s.aux_loss for s in moe_stats]).mean()
    z = torch.stack([s.z_loss for s in moe_stats]).mean()
    loss = nll + cfg.moe.aux_loss_coef * aux + cfg.moe.z_loss_coef * z
    if horizon_nll is not None:
        loss = loss + horizon_weight * horizon_nll
    counts = torch.stack([s.counts for s in moe_stats])
    return PretrainOutput(loss=loss, nll=nll, aux_loss=aux, z_loss=z, expert_counts=counts, horizon_nll=horizon_nll)


def _feed_own_predictions(model: MoiraiMoENetwork, normed: Tensor, observed: Tensor, layout: PackedLayout,
                          mask: Tensor, stats_bn: Tensor, rate: float, variate_bn: Tensor | None = None) -> Tensor:
    """normed [B, N, P] with each non-statistics patch j+1 of a sample replaced, with probability `rate`,
    by a draw from the prediction made at patch j over the true inputs (observed values only; missing
    values keep their fill). The pass runs the network module directly, without gradients, so it needs
    every parameter present on this rank (ZeRO stage 0-2, not 3). Uses torch's global RNG."""
    P = normed.shape[-1]
    with torch.no_grad():
        hidden, _, _ = model(normed, layout.position, mask, token_mask_bn=layout.sample_id > 0, variate_bn=variate_bn)
        draw_bnp = model.head.distribution(hidden[:, :-1]).sample()[..., :P]  # patch j+1 as predicted at j
    sid = layout.sample_id
    replaceable_bn = (sid[:, 1:] == sid[:, :-1]) & (sid[:, 1:] > 0) & ~stats_bn[:, 1:]
    chosen_bn = replaceable_bn & (torch.rand(replaceable_bn.shape, device=normed.device) < rate)
    swap_bnp = chosen_bn[..., None] & observed[:, 1:]
    fed = normed.clone()
    fed[:, 1:] = torch.where(swap_bnp, draw_bnp.to(normed.dtype), normed[:, 1:])
    return fed
