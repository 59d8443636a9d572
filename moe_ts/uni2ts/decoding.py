"""uni2ts' decoding (docs/ARCHITECTURE.md §2, "Converting uni2ts"): `decode="uni2ts"` and any-variate groups.

uni2ts' Moirai-MoE forecaster re-standardises each sample path with statistics that include its own sampled
patches and re-encodes the whole sequence at every step (no KV cache). A group of V related series is packed
into one row variate-major, as uni2ts packs it, with variate ids (the attention bias), time ids shared by the
variates and per-variate statistics. `tests/moe_ts/uni2ts/test_convert.py` matches both to uni2ts' recorded outputs.

Shape legend: B series, S sample paths, V variates, N patches, P patch size, K patches predicted per position,
T context length.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from moe_ts.attention import RopeTable
from moe_ts.covariates import GroupCovariates, pack_group_row
from moe_ts.device import to_device
from moe_ts.distributions import ScaledMixture
from moe_ts.forecast_harness import check_request, context_arrays, seeded_eval
from moe_ts.forecast_output import DEFAULT_QUANTILES, ForecastOutput
from moe_ts.packing import (PackedLayout, left_pad, masked_stats, observed_time_ids, patchify,
                            standardise, time_causal_mask)

if TYPE_CHECKING:
    from moe_ts.network import MoiraiMoENetwork as MoiraiMoEModel  # decoding needs only the network


def _restandardised_step(
    model: "MoiraiMoEModel", values_bnp: Tensor, observed_bnp: Tensor, sample_id_bn: Tensor, time_bn: Tensor,
    rope_table: RopeTable | None = None,
) -> ScaledMixture:
    """Statistics over every observed value (context and sampled patches), standardise, encode the whole
    sequence: the next-patch distribution [B, K·P] on the original scale (uni2ts' per-step computation)."""
    cfg = model.config
    param = next(model.parameters())
    loc, scale, _ = masked_stats(values_bnp, observed_bnp, sample_id_bn > 0, sample_id_bn, cfg.min_scale)
    normed = standardise(values_bnp, observed_bnp, loc, scale, cfg.missing_values).to(param.dtype)
    hidden, _, _ = model(normed, time_bn, time_causal_mask(sample_id_bn, time_bn), rope_table=rope_table)
    return ScaledMixture(model.head.distribution(hidden[:, -1]), loc[:, -1].float(), scale[:, -1].float())


def uni2ts_paths(
    model: "MoiraiMoEModel", arrays: Sequence[np.ndarray], horizon_patches: int, num_samples: int,
    draw: Callable[[ScaledMixture, int], Tensor] | None = None,
) -> Tensor:
    """[B, S, horizon_patches·P] sample paths decoded as uni2ts does (`decode="uni2ts"`).

    `draw(distribution, n)` returns n draws [n, rows, K·P] on the original scale (default: sampling);
    tests pass fixed patches to compare each step with uni2ts.
    """
    cfg = model.config
    device = next(model.parameters()).device
    draw = draw or (lambda distr, n: distr.sample((n,)))
    target, sample_id = left_pad(arrays, cfg.patch_size)
    values, observed = patchify(to_device(target, device), cfg.patch_size)
    sample_id = to_device(sample_id, device)
    layout = PackedLayout.from_sample_id(sample_id)
    time_bn = observed_time_ids(observed, sample_id) if cfg.time_ids == "observed" else layout.position
    per_step = cfg.predict_patches
    num_steps = math.ceil(horizon_patches / per_step)
    # The sequence's buffers hold every patch the forecast will feed back, written in place (a step re-encodes
    # the first `length` of them); RoPE's table is built once (time ids never exceed a patch's index).
    n, capacity = values.shape[1], values.shape[1] + (num_steps - 1) * per_step
    values, observed, sample_id, time_bn = (_with_room(t, capacity) for t in (values, observed, sample_id, time_bn))
    rope_table = model.rope_table(capacity)
    step_ids = torch.arange(1, per_step + 1, device=device)
    paths = torch.empty(len(arrays) * num_samples, num_steps * per_step * cfg.patch_size, device=device)
    for step in range(num_steps):
        length = n + step * per_step
        distr = _restandardised_step(model, values[:, :length], observed[:, :length], sample_id[:, :length],
                                     time_bn[:, :length], rope_table)
        if step == 0:  # the context is shared by the S paths: one encoding, S draws, then one row per path
            fed_rq = draw(distr, num_samples).float().transpose(0, 1).reshape(len(arrays) * num_samples, -1)
            values, observed, sample_id, time_bn = (t.repeat_interleave(num_samples, 0)
                                                    for t in (values, observed, sample_id, time_bn))
        else:
            fed_rq = draw(distr, 1)[0].float()
        paths[:, step * fed_rq.shape[1]:(step + 1) * fed_rq.shape[1]] = fed_rq
        if step + 1 == num_steps:
            break
        new = slice(length, length + per_step)
        values[:, new] = fed_rq.unflatten(-1, (per_step, cfg.patch_size)).to(values.dtype)
        observed[:, new] = True
        sample_id[:, new] = sample_id[:, length - 1:length]
        time_bn[:, new] = time_bn[:, length - 1:length] + step_ids
    paths = paths[:, :horizon_patches * cfg.patch_size]
    return paths.view(len(arrays), num_samples, -1).cpu()


def _with_room(t_bn: Tensor, capacity: int) -> Tensor:
    """`t_bn` [B, N, ...] copied into the front of a buffer of `capacity` positions along dim 1 (the rest unset)."""
    out = t_bn.new_empty(t_bn.shape[0], capacity, *t_bn.shape[2:])
    out[:, :t_bn.shape[1]] = t_bn
    return out


def pack_group(group_vt: np.ndarray, patch_size: int, device: torch.device | str = "cpu") -> dict[str, Tensor]:
    """One multivariate row as uni2ts packs it: the V variates' patches one after another (variate-major).

    Returns values / observed [1, V·N, P] (left-padded with missing values to whole patches), sample_id,
    variate (0..V-1), time (uni2ts' time ids, shared by the variates: a patch counts from the first one in
    which any variate is observed), stat_id (variate + 1: each variate gets its own statistics) and stats_use
    (all True), all [1, V·N], on `device` (`moe_ts.covariates.pack_group_row` without covariates).
    """
    return pack_group_row(group_vt, None, patch_size, 0, "observed", device).as_dict()


def _group_step(model: "MoiraiMoEModel", row: dict[str, Tensor], last_bv: Tensor,
                rope_table: RopeTable | None = None) -> ScaledMixture:
    """Per-variate statistics over every observed value (of the tokens `stats_use` marks, if given),
    standardise, encode with the variate bias: the next-patch distributions [B, V, K·P] at the tokens
    `last_bv` (original scale)."""
    cfg = model.config
    param = next(model.parameters())
    use_bn = row["stats_use"] if "stats_use" in row else row["sample_id"] > 0
    loc, scale, _ = masked_stats(row["values"], row["observed"], use_bn, row["stat_id"], cfg.min_scale)
    normed = standardise(row["values"], row["observed"], loc, scale, cfg.missing_values,
                         row["stat_id"]).to(param.dtype)
    mask = time_causal_mask(row["sample_id"], row["time"])
    hidden, _, _ = model(normed, row["time"], mask, variate_bn=row["variate"], rope_table=rope_table)
    take = last_bv[..., None]
    h_bvd = hidden.gather(1, take.expand(-1, -1, hidden.shape[-1]))
    return ScaledMixture(model.head.distribution(h_bvd), loc.gather(1, take).float(), scale.gather(1, take).float())


def group_paths(
    model: "MoiraiMoEModel", group_vt: np.ndarray, horizon_patches: int, num_samples: int,
    draw: Callable[[ScaledMixture, int], Tensor] | None = None, covariates: GroupCovariates | None = None,
) -> Tensor:
    """[Vt, S, horizon_patches·P] joint sample paths of a group of Vt target series (any-variate, uni2ts'
    decoding), with its covariates (`moe_ts.covariates`: extra variates, never predicted).

    Each step appends one patch per target variate at the next time id (the variates of a time step see each
    other) and re-standardises every variate with its sampled patches, as uni2ts' forecaster does. `draw`
    as in `uni2ts_paths` (draws [n, rows, Vt, K·P]).
    """
    cfg = model.config
    if not cfg.variate_bias:
        raise ValueError("this model has no variate attention bias (variate_bias: false): it forecasts series "
                         "independently; pass them to forecast() instead")
    if cfg.predict_patches != 1:
        raise ValueError("group forecasting needs predict_patches: 1")
    device = next(model.parameters()).device
    draw = draw or (lambda distr, n: distr.sample((n,)))
    packed = pack_group_row(group_vt, covariates, cfg.patch_size, horizon_patches, "observed", device)
    row = packed.as_dict()
    v = packed.num_targets
    start = row["values"].shape[1]
    capacity = start + v * (horizon_patches - 1)  # every patch the forecast feeds back, written in place
    row = {k: _with_room(t, capacity) for k, t in row.items()}
    rope_table = model.rope_table(int(packed.time.max()) + horizon_patches + 1)  # once, for every time id
    variates_v = torch.arange(v, device=device)
    last_bv = packed.target_last_tokens()
    t0 = packed.last_context_time
    steps = []
    for step in range(horizon_patches):
        length = start + v * step
        distr = _group_step(model, {k: t[:, :length] for k, t in row.items()}, last_bv, rope_table)
        if step == 0:
            fed = draw(distr, num_samples).float()[:, 0]  # [S, V, P]: one row per path from here on
            row = {k: t.expand(num_samples, *t.shape[1:]).clone() for k, t in row.items()}
            last_bv = last_bv.expand(num_samples, -1)
        else:
            fed = draw(distr, 1)[0].float()  # [S, V, P]
        steps.append(fed)
        if step + 1 == horizon_patches:
            break
        new = slice(length, length + v)
        row["values"][:, new] = fed.to(row["values"].dtype)
        row["observed"][:, new] = True
        row["sample_id"][:, new] = 1
        row["variate"][:, new] = variates_v
        row["stat_id"][:, new] = variates_v + 1
        row["stats_use"][:, new] = True  # uni2ts: a sampled patch leaves the prediction mask and joins the stats
        row["time"][:, new] = t0 + step + 1
        last_bv = (length + variates_v)[None].expand(num_samples, v)
    paths = torch.stack(steps, dim=2)  # [S, V, H', P]
    return paths.flatten(2).transpose(0, 1).cpu()  # [V, S, H'·P]


@torch.no_grad()
def forecast_group(
    model: "MoiraiMoEModel", group: object, prediction_length: int, num_samples: int = 100,
    quantile_levels: Iterable[float] = DEFAULT_QUANTILES, seed: int | None = None, context_length: int | None = None,
) -> ForecastOutput:
    """Forecast a group of V series jointly (a multivariate frame: 2-D array [V, T], DataFrame columns, or a list
    of equal-length series; NaN = missing). Returns samples [V, S, H], quantiles [V, Q, H] and mean [V, H]."""
    check_request(prediction_length, num_samples)
    arrays = context_arrays(group)
    if len({len(a) for a in arrays}) != 1:
        raise ValueError(f"a group needs series of one length, got lengths {sorted({len(a) for a in arrays})}")
    cfg = model.config
    horizon_patches = math.ceil(prediction_length / cfg.patch_size)
    if context_length is None:  # all variates' context patches and the horizon's fit the trained window
        context_length = max((cfg.max_seq_len - horizon_patches * len(arrays)) // len(arrays), 1) * cfg.patch_size
    group_vt = np.stack(arrays)[:, -context_length:]
    if np.isinf(group_vt).any() or np.isnan(group_vt).all():
        raise ValueError("group: the context contains inf, or no observed value")
    with seeded_eval(model, seed):
        samples = group_paths(model, group_vt, horizon_patches, num_samples)[..., :prediction_length].numpy()
    return ForecastOutput.from_samples(samples, tuple(float(q) for q in quantile_levels))
