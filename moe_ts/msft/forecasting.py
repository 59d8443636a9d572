"""Forecasting with an MSFT-finetuned network (docs/ARCHITECTURE.md §9): every scale forecasts, the
scales' forecasts are upsampled to full resolution and combined with the learnt weights softmax(w).

Decoding runs on the fine scale's clock. At fine step t (patch t of scale 0 to be predicted) the
sequence holds, for every scale i, the tokens whose span has ended by then (j with (j+1)·2^i ≤ t),
exactly the tokens a training window lets a prediction at t−1 depend on (the aggregator is causal, see
`moe_ts.msft.network`). Scale 0 predicts patch t; a scale i with t divisible by 2^i predicts its next patch
t/2^i (spanning fine patches t..t+2^i−1). What a scale feeds back is the per-point median of the
step's draws (the "median" mode of `moe_ts.forecasting`), so each scale follows its own forecast.
With the KV cache (`use_kv_cache=True`, the default) the context is encoded once and step t appends only its
new tokens, one per scale i with 2^i | t (the patch that scale fed back at step t − 2^i), through
`MSFTNetwork.extend`: no held token's state changes when later tokens arrive (the aggregator reads only
neighbours whose span has ended, see `moe_ts.msft.network`). `use_kv_cache=False` re-encodes the whole
multi-scale sequence at every step with the same draws: the reference the cache is tested against
(`benchmarks/msft_decoding.py` measures the gain).

Output samples: draw s of every scale, upsampled by repetition, combined with the weights (the scales'
draws are paired by index); quantiles and mean come from these combined samples.

Shape legend: B series, S samples, P patch size, n_i tokens of scale i, H horizon.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
import torch
from torch import Tensor

from moe_ts.forecast_harness import check_request, context_arrays, forecast_batches
from moe_ts.forecast_output import DEFAULT_QUANTILES, ForecastOutput
from moe_ts.decode_options import MEDIAN_DRAWS
from moe_ts.decode_options import accepted as accepted_decoding
from moe_ts.msft.network import avg_pool_nan
from moe_ts.packing import PackedLayout, masked_stats, patchify, standardise

if TYPE_CHECKING:
    from moe_ts.msft.network import MSFTNetwork


def default_context_length(net: "MSFTNetwork") -> int:
    """Half the model's trained window, rounded down to whole coarsest-scale patches (at least one)."""
    unit = net.config.patch_size * net.msft.pool
    return max(unit, (net.config.max_seq_len // 2 * net.config.patch_size) // unit * unit)


def _scale_tensors(net: "MSFTNetwork", target_bl: Tensor, pad_b: Tensor, scale: int
                   ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Scale `scale` of left-padded contexts: (normed [B, n, P], real [B, n], loc [B], scale [B])."""
    cfg = net.config
    factor = 2 ** scale
    values, observed = patchify(avg_pool_nan(target_bl, factor), cfg.patch_size)
    n = values.shape[1]
    span = cfg.patch_size * factor
    real = (torch.arange(n, device=values.device)[None, :] + 1) * span > pad_b[:, None]  # holds a series point
    layout = PackedLayout.from_sample_id(real.long())
    loc, sc, _ = masked_stats(values, observed, real, layout.sample_id, cfg.min_scale)
    normed = standardise(values, observed, loc, sc, cfg.missing_values)
    return normed, real, loc[:, -1, 0], sc[:, -1, 0]


def _decode(net: "MSFTNetwork", streams: list[Tensor], reals: list[Tensor], horizon_patches: int, num_samples: int,
            use_kv_cache: bool) -> list[list[Tensor]]:
    """Per scale, its draws [B, S, P] for each patch it predicts (the module docstring), from the contexts'
    normalised patches `streams` [B, n_i, P] and real masks `reals` [B, n_i]."""
    num_scales, n0 = net.num_scales, streams[0].shape[1]
    dtype = streams[0].dtype
    heads = net.heads()
    draws_per_scale: list[list[Tensor]] = [[] for _ in range(num_scales)]
    last: list[Tensor | None] = [None] * num_scales  # [B, D] the hidden state each scale predicts from
    fed: list[Tensor | None] = [None] * num_scales  # [B, P] the patch a scale fed back, not yet in the sequence
    cache = None
    if use_kv_cache:
        last_step = n0 + horizon_patches - 1  # the tokens held at the last step bound the buffers
        cache = net.empty_cache(streams[0].shape[0], [last_step // 2 ** i for i in range(num_scales)])
        rope_table = net.base.rope_table(last_step + 1)
        last = [h[:, -1] for h in net.extend(streams, reals, cache, rope_table)]
    for t in range(n0, n0 + horizon_patches):
        if cache is not None and t > n0:  # one new token per scale whose patch ended at t: its fed-back patch
            new = [fed[i][:, None] if t % 2 ** i == 0 else streams[i][:, :0] for i in range(num_scales)]
            hidden = net.extend(new, [torch.ones_like(p[..., 0], dtype=torch.bool) for p in new], cache, rope_table)
            last = [h[:, -1] if h.shape[1] else None for h in hidden]
        elif cache is None:
            counts = [t // 2 ** i for i in range(num_scales)]
            hidden, _ = net([s[:, :c] for s, c in zip(streams, counts)], [r[:, :c] for r, c in zip(reals, counts)])
            last = [h[:, -1] for h in hidden]
        for i in range(num_scales):
            if t % 2 ** i:
                continue
            distr = heads[i].distribution(last[i])
            draws_sbp = distr.sample((max(num_samples, MEDIAN_DRAWS),)).to(dtype)
            draws_per_scale[i].append(draws_sbp[:num_samples].transpose(0, 1))  # [B, S, P]
            fed[i] = draws_sbp.median(dim=0).values
            if cache is None:
                streams[i] = torch.cat((streams[i], fed[i][:, None]), dim=1)
                reals[i] = torch.cat((reals[i], torch.ones_like(reals[i][:, :1])), dim=1)
    return draws_per_scale


def _forecast_batch(net: "MSFTNetwork", arrays: list[np.ndarray], context_length: int, horizon: int,
                    num_samples: int, use_kv_cache: bool) -> Tensor:
    """[B, S, H] combined sample paths on the original scale."""
    cfg = net.config
    param = next(net.parameters())
    target = np.full((len(arrays), context_length), np.nan, dtype=np.float32)
    pad = np.zeros(len(arrays), dtype=np.int64)
    for b, a in enumerate(arrays):
        a = a[-context_length:]
        target[b, context_length - len(a):] = a
        pad[b] = context_length - len(a)
    target_bl = torch.from_numpy(target).to(param.device)
    pad_b = torch.from_numpy(pad).to(param.device)
    num_scales = net.num_scales
    streams, reals, locs, scales = [], [], [], []
    for i in range(num_scales):
        normed, real, loc, sc = _scale_tensors(net, target_bl, pad_b, i)
        streams.append(normed.to(param.dtype))
        reals.append(real)
        locs.append(loc)
        scales.append(sc)
    horizon_patches = math.ceil(horizon / cfg.patch_size)
    draws_per_scale = _decode(net, streams, reals, horizon_patches, num_samples, use_kv_cache)
    weights = net.scale_weights().detach().float()
    combined = 0.0
    for i in range(num_scales):
        paths = torch.cat(draws_per_scale[i], dim=-1).float()  # [B, S, patches·P] at 1/2^i resolution
        paths = locs[i].float()[:, None, None] + scales[i].float()[:, None, None] * paths
        combined = combined + weights[i] * paths.repeat_interleave(2 ** i, dim=-1)[..., :horizon]
    return combined.cpu()


@torch.no_grad()
def msft_forecast(net: "MSFTNetwork", contexts: object, prediction_length: int, num_samples: int = 100,
                  quantile_levels: Iterable[float] = DEFAULT_QUANTILES, seed: int | None = None, batch_size: int = 64,
                  context_length: int | None = None, allow_short_context: bool = True, progress: bool = False,
                  **decoding: Any) -> ForecastOutput:
    """Probabilistic forecast of each context series (1-D arrays, NaN = missing), as `moe_ts.forecasting.forecast`.

    context_length: the most recent points used, a multiple of patch_size·2^K (default
    `default_context_length`); a shorter series is always left-padded with missing values (whatever
    `allow_short_context` says), but it must hold at least one patch of the coarsest scale (patch_size·2^K
    points). decoding: the MoE model's `DecodeOptions` keywords, checked as there; only `use_kv_cache` applies
    (False: re-encode the sequence at each step, the cache's reference): every scale decodes by feeding back its
    median, whatever `decode` says.
    """
    options = accepted_decoding("MSFTModel.forecast", decoding)  # a caller written for the MoE model passes them
    check_request(prediction_length, num_samples, batch_size)
    unit = net.config.patch_size * net.msft.pool
    context_length = default_context_length(net) if context_length is None else context_length
    if context_length % unit or context_length < unit:
        raise ValueError(f"context_length {context_length} must be a positive multiple of patch_size·2^K = {unit}")
    arrays = _checked_contexts(net, context_arrays(contexts))
    return forecast_batches(
        net, arrays, lambda chunk: _forecast_batch(net, chunk, context_length, prediction_length, num_samples,
                                      options.use_kv_cache),
        prediction_length, quantile_levels, seed, batch_size, progress)


def _checked_contexts(net: "MSFTNetwork", arrays: list[np.ndarray]) -> list[np.ndarray]:
    """`arrays`, refused by series index when one holds inf or too short an observed span for the coarsest scale."""
    unit = net.config.patch_size * net.msft.pool
    for i, a in enumerate(arrays):
        observed = np.flatnonzero(~np.isnan(a))
        if len(observed) == 0 or len(a) - observed[0] < unit:
            raise ValueError(f"series {i}: {len(a) - (observed[0] if len(observed) else len(a))} observed-span points "
                             f"are too short for {net.msft.num_scales} extra scales: need at least {unit} "
                             f"(patch_size·2^K)")
        if np.isinf(a).any():
            raise ValueError(f"series {i}: context contains inf")
    return arrays
