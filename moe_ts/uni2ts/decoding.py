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

from moe_ts.distributions import ScaledMixture
from moe_ts.forecast_harness import check_request, context_arrays, seeded_eval
from moe_ts.forecast_output import DEFAULT_QUANTILES, ForecastOutput
from moe_ts.packing import (PackedLayout, left_pad, masked_stats, observed_time_ids, patchify,
                            standardise, time_causal_mask)

if TYPE_CHECKING:
    from moe_ts.network import MoiraiMoENetwork as MoiraiMoEModel  # decoding needs only the network


def _restandardised_step(
    model: "MoiraiMoEModel", values_bnp: Tensor, observed_bnp: Tensor, sample_id_bn: Tensor, time_bn: Tensor
) -> ScaledMixture:
    """Statistics over every observed value (context and sampled patches), standardise, encode the whole
    sequence: the next-patch distribution [B, K·P] on the original scale (uni2ts' per-step computation)."""
    cfg = model.config
    param = next(model.parameters())
    loc, scale, _ = masked_stats(values_bnp, observed_bnp, sample_id_bn > 0, sample_id_bn, cfg.min_scale)
    normed = standardise(values_bnp, observed_bnp, loc, scale, cfg.missing_values).to(param.dtype)
    hidden, _, _ = model(normed, time_bn, time_causal_mask(sample_id_bn, time_bn))
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
    values, observed = patchify(target.to(device), cfg.patch_size)
    sample_id = sample_id.to(device)
    layout = PackedLayout.from_sample_id(sample_id)
    time_bn = observed_time_ids(observed, sample_id) if cfg.time_ids == "observed" else layout.position
    per_step = cfg.predict_patches
    num_steps = math.ceil(horizon_patches / per_step)
    steps = []
    for step in range(num_steps):
        distr = _restandardised_step(model, values, observed, sample_id, time_bn)
        if step == 0:  # the context is shared by the S paths: one encoding, S draws, then one row per path
            fed_rq = draw(distr, num_samples).float().transpose(0, 1).reshape(len(arrays) * num_samples, -1)
            values, observed, sample_id, time_bn = (t.repeat_interleave(num_samples, 0)
                                                    for t in (values, observed, sample_id, time_bn))
        else:
            fed_rq = draw(distr, 1)[0].float()
        steps.append(fed_rq)
        fed_rkp = fed_rq.unflatten(-1, (per_step, cfg.patch_size)).to(values.dtype)
        values = torch.cat((values, fed_rkp), dim=1)
        observed = torch.cat((observed, torch.ones_like(fed_rkp, dtype=torch.bool)), dim=1)
        sample_id = torch.cat((sample_id, sample_id[:, -1:].expand(-1, per_step)), dim=1)
        time_bn = torch.cat((time_bn, time_bn[:, -1:] + torch.arange(1, per_step + 1, device=device)), dim=1)
    paths = torch.cat(steps, dim=-1)[:, :horizon_patches * cfg.patch_size]
    return paths.view(len(arrays), num_samples, -1).cpu()


def pack_group(group_vt: np.ndarray, patch_size: int) -> dict[str, Tensor]:
    """One multivariate row as uni2ts packs it: the V variates' patches one after another (variate-major).

    Returns values / observed [1, V·N, P] (left-padded with missing values to whole patches), sample_id,
    variate (0..V-1), time (uni2ts' time ids, shared by the variates: a patch counts from the first one in
    which any variate is observed) and stat_id (variate + 1: each variate gets its own statistics), all [1, V·N].
    """
    v, t = group_vt.shape
    n = math.ceil(t / patch_size)
    padded = np.full((v, n * patch_size), np.nan, dtype=np.float32)
    padded[:, n * patch_size - t:] = group_vt
    values, observed = patchify(torch.from_numpy(padded), patch_size)  # [V, N, P]
    any_obs = observed.any(-1).any(0, keepdim=True)  # [1, N]
    time_n = observed_time_ids(any_obs[..., None], torch.ones(1, n, dtype=torch.long))[0]
    variate = torch.arange(v).repeat_interleave(n)
    return {"values": values.reshape(1, v * n, patch_size), "observed": observed.reshape(1, v * n, patch_size),
            "sample_id": torch.ones(1, v * n, dtype=torch.long), "variate": variate[None],
            "time": time_n.repeat(v)[None], "stat_id": (variate + 1)[None]}


def _group_step(model: "MoiraiMoEModel", row: dict[str, Tensor], last_bv: Tensor) -> ScaledMixture:
    """Per-variate statistics over every observed value, standardise, encode with the variate bias: the
    next-patch distributions [B, V, K·P] at the tokens `last_bv` (original scale)."""
    cfg = model.config
    param = next(model.parameters())
    loc, scale, _ = masked_stats(row["values"], row["observed"], row["sample_id"] > 0, row["stat_id"], cfg.min_scale)
    normed = standardise(row["values"], row["observed"], loc, scale, cfg.missing_values).to(param.dtype)
    mask = time_causal_mask(row["sample_id"], row["time"])
    hidden, _, _ = model(normed, row["time"], mask, variate_bn=row["variate"])
    take = last_bv[..., None]
    h_bvd = hidden.gather(1, take.expand(-1, -1, hidden.shape[-1]))
    return ScaledMixture(model.head.distribution(h_bvd), loc.gather(1, take).float(), scale.gather(1, take).float())


def group_paths(
    model: "MoiraiMoEModel", group_vt: np.ndarray, horizon_patches: int, num_samples: int,
    draw: Callable[[ScaledMixture, int], Tensor] | None = None,
) -> Tensor:
    """[V, S, horizon_patches·P] joint sample paths of a group of V series (any-variate, uni2ts' decoding).

    Each step appends one patch per variate at the next time id (the variates of a time step see each
    other) and re-standardises every variate with its sampled patches, as uni2ts' forecaster does. `draw`
    as in `uni2ts_paths` (draws [n, rows, V, K·P]).
    """
    cfg = model.config
    if not cfg.variate_bias:
        raise ValueError("this model has no variate attention bias (variate_bias: false): it forecasts series "
                         "independently; pass them to forecast() instead")
    if cfg.predict_patches != 1:
        raise ValueError("group forecasting needs predict_patches: 1")
    device = next(model.parameters()).device
    draw = draw or (lambda distr, n: distr.sample((n,)))
    row = {k: t.to(device) for k, t in pack_group(group_vt, cfg.patch_size).items()}
    v = group_vt.shape[0]
    n = row["values"].shape[1] // v
    last_bv = (torch.arange(v, device=device) * n + n - 1)[None]
    steps = []
    for step in range(horizon_patches):
        distr = _group_step(model, row, last_bv)
        if step == 0:
            fed = draw(distr, num_samples).float()[:, 0]  # [S, V, P]: one row per path from here on
            row = {k: t.expand(num_samples, *t.shape[1:]).clone() for k, t in row.items()}
            last_bv = last_bv.expand(num_samples, -1)
        else:
            fed = draw(distr, 1)[0].float()  # [S, V, P]
        steps.append(fed)
        length = row["values"].shape[1]
        row["values"] = torch.cat((row["values"], fed.to(row["values"].dtype)), dim=1)
        row["observed"] = torch.cat((row["observed"], torch.ones_like(fed, dtype=torch.bool)), dim=1)
        row["sample_id"] = torch.cat((row["sample_id"], row["sample_id"][:, -v:]), dim=1)
        row["variate"] = torch.cat((row["variate"], torch.arange(v, device=device).expand(num_samples, v)), dim=1)
        row["stat_id"] = torch.cat((row["stat_id"], (torch.arange(v, device=device) + 1).expand(num_samples, v)), dim=1)
        row["time"] = torch.cat((row["time"], (row["time"].max(dim=1, keepdim=True).values + 1).expand(-1, v)), dim=1)
        last_bv = (length + torch.arange(v, device=device))[None].expand(num_samples, v)
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
