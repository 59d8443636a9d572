"""Any-variate group forecasting with covariates and the KV cache (docs/ARCHITECTURE.md §2, "Groups and covariates").

A group (Vt target series and their covariates, `moe_ts.covariates`) is one packed row. `decode="uni2ts"` decodes
it as uni2ts does (`moe_ts.uni2ts.decoding.group_paths`: every step re-standardises with the sampled patches and
re-encodes the row). The other modes (`moe_ts.forecasting`'s "sample", "median", "mean") keep the context's
statistics for the whole horizon, so a step encodes only the tokens of its new time id against the KV cache (the
Vt fed-back target patches and the known covariates' patches of that time, `GroupDecoder`): the cache keeps every
token's keys, values and variate id (the variate bias of a new query against each cached key), and the step's mask
is causality by time id (the new tokens see every cached token and each other).
`use_kv_cache=False` re-encodes the whole row at every step with the same draws: the reference the cache is tested
against (`benchmarks/group_decoding.py` measures the gain).

Models without the variate bias (variate_bias: false, our univariate-trained models) decode groups too: every
variate's tokens enter attention as further tokens of their time step, with nothing telling the target from a
covariate but their values; such a model has learnt nothing about other variates unless it was pretrained on
multivariate rows (README, "Covariates").

Shape legend: B rows (1, or S sample paths), S sample paths, Vt target variates, L tokens, P patch size, D width,
K patches predicted per position, H horizon.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from moe_ts.attention import LayerCache, repeated_rows
from moe_ts.covariates import (CovariateValues, GroupCovariates, GroupRow, SeriesCovariates, check_covariates,
                               pack_group_row, per_series)
from moe_ts.decode_options import MEDIAN_DRAWS, DecodeOptions
from moe_ts.forecast_harness import check_request, context_arrays, forecast_batches, seeded_eval
from moe_ts.forecast_output import DEFAULT_QUANTILES, ForecastOutput
from moe_ts.packing import masked_stats, standardise, time_causal_mask
from moe_ts.uni2ts.decoding import group_paths as uni2ts_group_paths

if TYPE_CHECKING:
    from moe_ts.network import MoiraiMoENetwork as MoiraiMoEModel


class GroupDecoder:
    """Runs the network over a group's row as it grows by one time step per decoding step, with or without the
    KV cache.

    The prefill encodes the context patches of every variate; each step appends the tokens of the next time id
    together: the Vt fed-back target patches and the Vk known covariates' patches of that time. Tokens of one time
    id see each other (uni2ts' causality by time id), so a token must enter with every other token of its time for
    its keys and values, once cached, to be what a re-encoding would compute. Tokens, time ids and variate ids are
    buffers sized once for the whole forecast and written in place; RoPE's table is built once."""

    def __init__(self, model: "MoiraiMoEModel", row: GroupRow, normed_lp: Tensor, use_cache: bool,
                 horizon_patches: int) -> None:
        self.model = model
        self.use_cache = use_cache
        vt, n = row.num_targets, row.context_patches
        context = row.variate.shape[1] - row.known_horizon_tokens
        # the known covariates' horizon patches [1, Vk, Hp, P], fed one time step at a time
        vk = row.known_horizon_tokens // max(horizon_patches, 1)
        self._known = normed_lp[:, context:].reshape(1, vk, horizon_patches, normed_lp.shape[-1])
        self._step_variates = torch.cat((torch.arange(vt, device=row.time.device),
                                         row.variate[0, context::max(horizon_patches, 1)]))[None]  # [1, Vt+Vk]
        capacity = context + (vt + vk) * max(horizon_patches - 1, 0)
        self.num_targets = vt
        self.length = context
        self._tokens = normed_lp.new_empty(1, capacity, normed_lp.shape[-1])
        self._time = row.time.new_empty(1, capacity)
        self._variate = row.variate.new_empty(1, capacity)
        self._tokens[:, :context] = normed_lp[:, :context]
        self._time[:, :context], self._variate[:, :context] = row.time[:, :context], row.variate[:, :context]
        self._last = row.target_last_tokens()  # [1, Vt]: the tokens whose hidden states predict the next patches
        self._next_time = row.last_context_time + 1  # [1, 1]
        self._steps = 0
        self.rope_table = model.rope_table(int(row.time[:, :n].max()) + horizon_patches + 1)
        self.caches: list[LayerCache] | None = None

    def _encode_all(self) -> Tensor:
        """Encode the whole row so far; hidden states [B, L, D]."""
        tokens, time = self._tokens[:, :self.length], self._time[:, :self.length]
        mask = time_causal_mask(torch.ones_like(time), time)
        caches = self.model.empty_caches(tokens.shape[0], self._tokens.shape[1]) if self.use_cache else None
        hidden, caches, _ = self.model(tokens, time, mask, caches, variate_bn=self._variate[:, :self.length],
                                       rope_table=self.rope_table)
        self.caches = caches if self.use_cache else None
        return hidden

    def _at_last(self, hidden_bld: Tensor) -> Tensor:
        take = self._last.expand(hidden_bld.shape[0], -1)[..., None].expand(-1, -1, hidden_bld.shape[-1])
        return hidden_bld.gather(1, take)

    def prefill(self) -> Tensor:
        """Hidden states of each target's last context patch [B, Vt, D]."""
        return self._at_last(self._encode_all())

    def expand(self, repeats: int) -> None:
        """Repeat every row `repeats` times (one copy per sample path)."""
        rows = repeated_rows(self._tokens.shape[0], repeats, self._tokens.device)
        self._tokens, self._time, self._variate = (t.index_select(0, rows)
                                                   for t in (self._tokens, self._time, self._variate))
        if self.caches is not None:
            self.caches = [c.expand(repeats) for c in self.caches]

    def step(self, patches_bvp: Tensor) -> Tensor:
        """Append the next time step: one fed-back patch per target variate [B, Vt, P] and the known covariates'
        patches of that time; hidden states of the new target tokens [B, Vt, D]."""
        b, vt = patches_bvp.shape[:2]
        known_bkp = self._known[:, :, self._steps].expand(b, -1, -1)
        new_bwp = torch.cat((patches_bvp, known_bkp.to(patches_bvp.dtype)), dim=1)  # W = Vt + Vk new tokens
        w = new_bwp.shape[1]
        start, end = self.length, self.length + w
        time_bw = self._next_time.expand(b, w)
        self._tokens[:, start:end] = new_bwp
        self._time[:, start:end] = time_bw
        self._variate[:, start:end] = self._step_variates
        self.length = end
        self._next_time = self._next_time + 1
        self._steps += 1
        self._last = torch.arange(start, start + vt, device=self._time.device)[None]
        if self.caches is None:
            return self.prefill()
        mask_bwl = self._time[:, None, :end] <= time_bw[..., None]  # causality by time id
        hidden, self.caches, _ = self.model(new_bwp, time_bw, mask_bwl, self.caches,
                                            variate_bn=self._step_variates.expand(b, w), rope_table=self.rope_table)
        return hidden[:, :vt]


def _normalised_row(model: "MoiraiMoEModel", row: GroupRow) -> tuple[Tensor, Tensor, Tensor]:
    """(normalised row [1, L, P], loc and scale of each target [1, Vt, 1]) with per-variate statistics."""
    cfg = model.config
    param = next(model.parameters())
    loc, scale, _ = masked_stats(row.values, row.observed, row.stats_use, row.stat_id, cfg.min_scale)
    normed = standardise(row.values, row.observed, loc, scale, cfg.missing_values, row.stat_id).to(param.dtype)
    last = row.target_last_tokens()[..., None]
    return normed, loc.gather(1, last), scale.gather(1, last)


def group_sample_paths(model: "MoiraiMoEModel", row: GroupRow, horizon_patches: int, num_samples: int,
                       options: DecodeOptions) -> Tensor:
    """[Vt, S, horizon_patches·P] joint sample paths of the row's targets, decoded with the context's statistics
    (decode "sample", "median" or "mean"; the module docstring), on the model's device."""
    cfg = model.config
    param = next(model.parameters())
    normed, loc, scale = _normalised_row(model, row)
    decoder = GroupDecoder(model, row, normed, options.use_kv_cache, horizon_patches)
    hidden = decoder.prefill()  # [1, Vt, D]
    sample = options.decode == "sample"
    if sample:
        hidden = hidden.expand(num_samples, -1, -1)
        decoder.expand(num_samples)
    p, vt, noise = cfg.patch_size, row.num_targets, options.noise
    paths = torch.empty(num_samples, vt, horizon_patches * p, dtype=param.dtype, device=param.device)
    for step in range(horizon_patches):
        distr = model.head.distribution(hidden)  # batch shape [B, Vt, K·P]: the leading patch is emitted
        emitted = paths[..., step * p:(step + 1) * p]
        if sample:
            draws, centers = (t[..., :p].to(param.dtype) for t in distr.sample_with_centers())
            emitted.copy_(draws)
            fed = draws if noise == 1.0 else centers + noise * (draws - centers)
        else:
            num_draws = max(num_samples, MEDIAN_DRAWS) if options.decode == "median" else num_samples
            draws = distr.sample((num_draws,))[:, 0, :, :p].to(param.dtype)  # [draws, Vt, P]
            emitted.copy_(draws[:num_samples])
            fed = (draws.median(dim=0).values if options.decode == "median" else distr.mean[0, :, :p])[None]
        if step + 1 < horizon_patches:
            hidden = decoder.step(fed.to(param.dtype))
    return (loc.float() + scale.float() * paths.float()).transpose(0, 1)  # [Vt, S, H'·P]


def decode_group(model: "MoiraiMoEModel", targets_vt: np.ndarray, covariates: GroupCovariates | None,
                 horizon_patches: int, num_samples: int, options: DecodeOptions) -> Tensor:
    """[Vt, S, horizon_patches·P] sample paths of one group on the model's device, as `options.decode` says."""
    cfg = model.config
    if options.decode == "uni2ts":
        return uni2ts_group_paths(model, targets_vt, horizon_patches, num_samples, covariates=covariates)
    device = next(model.parameters()).device
    row = pack_group_row(targets_vt, covariates, cfg.patch_size, horizon_patches, cfg.time_ids, device)
    return group_sample_paths(model, row, horizon_patches, num_samples, options)


def group_context_length(model: "MoiraiMoEModel", num_targets: int, covariates: GroupCovariates,
                         horizon_patches: int) -> int:
    """Default context (points) of a group: all variates' context patches, the known covariates' horizon
    patches and the fed-back target patches fit the trained window."""
    cfg = model.config
    v = num_targets + len(covariates.past) + len(covariates.known)
    room = cfg.max_seq_len - horizon_patches * (len(covariates.known) + num_targets)
    return max(room // v, 1) * cfg.patch_size


def _trimmed(targets_vt: np.ndarray, covariates: GroupCovariates, context_length: int) -> tuple[np.ndarray,
                                                                                                 GroupCovariates]:
    """The last `context_length` points of the targets and covariates (a known covariate keeps its horizon)."""
    t = targets_vt.shape[1]
    keep = min(context_length, t)
    return targets_vt[:, t - keep:], GroupCovariates({k: a[t - keep:] for k, a in covariates.past.items()},
                                                     {k: a[t - keep:] for k, a in covariates.known.items()})


@torch.no_grad()
def forecast_group(
    model: "MoiraiMoEModel", group: object, prediction_length: int, num_samples: int = 100,
    quantile_levels: Iterable[float] = DEFAULT_QUANTILES, seed: int | None = None, context_length: int | None = None,
    past_covariates: CovariateValues | None = None, known_covariates: CovariateValues | None = None,
    decode: str = "sample", feedback_noise: float | None = None, use_kv_cache: bool = True,
) -> ForecastOutput:
    """Forecast a group of Vt series jointly (a 2-D array [Vt, T], DataFrame columns, or a list of equal-length
    series; NaN = missing), with covariates by name: `past_covariates` {name: T values} (context only),
    `known_covariates` {name: T + H values} (the context's, then the horizon's). decode / feedback_noise /
    use_kv_cache: as `forecast` ("uni2ts": uni2ts' re-standardising decoding, no cache). Returns samples
    [Vt, S, H], quantiles [Vt, Q, H] and mean [Vt, H]."""
    options = DecodeOptions(decode, None, feedback_noise, use_kv_cache)
    check_request(prediction_length, num_samples)
    arrays = context_arrays(group)
    if len({len(a) for a in arrays}) != 1:
        raise ValueError(f"a group needs series of one length, got lengths {sorted({len(a) for a in arrays})}")
    targets_vt = np.stack(arrays)
    covariates = check_covariates(past_covariates, known_covariates, targets_vt.shape[1], prediction_length)
    cfg = model.config
    horizon_patches = math.ceil(prediction_length / cfg.patch_size)
    if context_length is None:
        context_length = group_context_length(model, len(arrays), covariates, horizon_patches)
    elif not 1 <= context_length <= cfg.max_context:
        raise ValueError(f"context_length must be in 1..{cfg.max_context} (max_seq_len·patch_size), got {context_length}")
    targets_vt, covariates = _trimmed(targets_vt, covariates, context_length)
    if np.isinf(targets_vt).any() or np.isnan(targets_vt).all():
        raise ValueError("group: the context contains inf, or no observed value")
    with seeded_eval(model, seed):
        paths = decode_group(model, targets_vt, covariates, horizon_patches, num_samples, options)
    samples = paths[..., :prediction_length].float().cpu().numpy()
    return ForecastOutput.from_samples(samples, tuple(float(q) for q in quantile_levels))


@torch.no_grad()
def forecast_with_covariates(
    model: "MoiraiMoEModel", contexts: object, prediction_length: int, *,
    past_covariates: SeriesCovariates | None = None, known_covariates: SeriesCovariates | None = None,
    num_samples: int = 100, quantile_levels: Iterable[float] = DEFAULT_QUANTILES, seed: int | None = None,
    context_length: int | None = None, decode: str = "sample", feedback_noise: float | None = None,
    use_kv_cache: bool = True, allow_short_context: bool = False, progress: bool = False, batch_size: int = 64,
    patches_per_step: int | None = None, head: str = "next",
) -> ForecastOutput:
    """`forecast` of B univariate series, each with its own covariates: each series is decoded as a group of one
    target and its covariates. past_covariates / known_covariates: {name: values per series} (a list of B 1-D
    arrays, a 2-D array [B, ...], or for one series a 1-D array); a series' past-only covariate has its context's
    length, a known one its context's length + prediction_length. batch_size: checked, unused (one group at a
    time, its S paths batched). Returns samples [B, S, H] etc. as `forecast`."""
    if patches_per_step not in (None, 1):
        raise ValueError("forecast with covariates emits one patch per step: patches_per_step does not apply")
    if head != "next":
        raise ValueError(f"forecast with covariates decodes with the next-patch head: head={head!r} does not apply")
    options = DecodeOptions(decode, None, feedback_noise, use_kv_cache)
    check_request(prediction_length, num_samples, batch_size)
    arrays = context_arrays(contexts)
    past = {k: per_series(v, len(arrays), k, "past") for k, v in (past_covariates or {}).items()}
    known = {k: per_series(v, len(arrays), k, "known") for k, v in (known_covariates or {}).items()}
    cfg = model.config
    horizon_patches = math.ceil(prediction_length / cfg.patch_size)
    groups = []
    for i, target in enumerate(arrays):
        where = f" (series {i})" if len(arrays) > 1 else ""
        covariates = check_covariates({k: v[i] for k, v in past.items()}, {k: v[i] for k, v in known.items()},
                                      len(target), prediction_length, where)
        length = context_length or group_context_length(model, 1, covariates, horizon_patches)
        if not 1 <= length <= cfg.max_context:
            raise ValueError(f"context_length must be in 1..{cfg.max_context} (max_seq_len·patch_size), got {length}")
        target_vt, covariates = _trimmed(target[None], covariates, length)
        if np.isinf(target_vt).any() or np.isnan(target_vt).all():
            raise ValueError(f"series {i}: context contains inf or has no observed value")
        if target_vt.shape[1] < cfg.patch_size and not allow_short_context:
            raise ValueError(f"series {i}: context has {target_vt.shape[1]} points, shorter than one patch "
                             f"({cfg.patch_size}); pass allow_short_context=True to left-pad it with missing values")
        groups.append((target_vt, covariates))
    order = iter(range(len(groups)))

    def one_series(chunk: Sequence[np.ndarray]) -> Tensor:  # the harness hands the series over in order
        target_vt, covariates = groups[next(order)]
        return decode_group(model, target_vt, covariates, horizon_patches, num_samples, options)

    return forecast_batches(model, [g[0][0] for g in groups], one_series, prediction_length, quantile_levels, seed,
                            batch_size=1, progress=progress)

