"""Groups and covariates as one any-variate row (docs/ARCHITECTURE.md §2, "Groups and covariates").

A forecast group holds Vt target series, Vk known covariates (values given for the context and the horizon, e.g.
calendar features or planned values) and Vp past-only covariates (observed in the context, unknown in the
horizon), all on one timeline. They become one packed row as uni2ts' Moirai-MoE forecaster packs them
(`MoiraiMoEForecast._convert`): the context patches of every variate one variate after another (targets, known,
past), then the known covariates' horizon patches; variate ids 0..V-1 in that order (the variate bias); time ids
shared by the variates (a patch of time t sees every variate's patches of time <= t); per-variate statistics.
Covariates are never predicted: the known ones' horizon patches are in the row from the start (a target patch of
time t sees the covariates up to time t, so a known value of time t reaches the forecast of patches after t), the
past-only ones have no horizon patch at all. A target's statistics come from its context; a known covariate's from
its context and horizon values (uni2ts scales every observed value outside the prediction mask).

Shape legend: V variates (Vt targets, Vk known, Vp past-only), T context length, H horizon length, N context
patches, Hp horizon patches, P patch size, L tokens of the row.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from moe_ts.packing import observed_time_ids, patchify

CovariateValues = Mapping[str, object]  # covariate name → its values (1-D array-like, NaN = missing)
SeriesCovariates = Mapping[str, object]  # covariate name → its values for each series (`per_series`)


@dataclass
class GroupCovariates:
    """The covariates of one group, checked against its context length T and horizon H."""

    past: dict[str, np.ndarray]  # name → [T]
    known: dict[str, np.ndarray]  # name → [T + H]: the context's values, then the horizon's

    @property
    def empty(self) -> bool:
        return not self.past and not self.known


def _one_d(name: str, kind: str, values: object, where: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    elif hasattr(values, "to_numpy"):
        values = values.to_numpy()
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{kind} covariate {name!r}{where}: values are not numeric") from None
    if arr.ndim != 1:
        raise ValueError(f"{kind} covariate {name!r}{where}: values must be 1-D, got shape {arr.shape}")
    if np.isinf(arr).any():
        raise ValueError(f"{kind} covariate {name!r}{where}: values contain inf")
    return arr.astype(np.float32)


def check_covariates(past: CovariateValues | None, known: CovariateValues | None, context_length: int,
                     prediction_length: int, where: str = "") -> GroupCovariates:
    """Covariates of a group whose targets have `context_length` points, checked: a past-only covariate has one
    value per context point; a known one a value per context point and per horizon step (`where`, e.g.
    " (series 3)", is added to the one-line error, which names the covariate)."""
    past, known = dict(past or {}), dict(known or {})
    both = sorted(set(past) & set(known))
    if both:
        raise ValueError(f"covariate {both[0]!r} is given both as past-only and as known")
    out = GroupCovariates({}, {})
    for name, values in past.items():
        arr = _one_d(name, "past", values, where)
        if len(arr) != context_length:
            raise ValueError(f"past covariate {name!r}{where}: {len(arr)} values, the target has {context_length} "
                             f"(a past-only covariate covers the context only)")
        out.past[name] = arr
    for name, values in known.items():
        arr = _one_d(name, "known", values, where)
        need = context_length + prediction_length
        if len(arr) == context_length:
            raise ValueError(f"known covariate {name!r}{where}: no values for the horizon (give {need} values: the "
                             f"context's {context_length}, then the next {prediction_length})")
        if len(arr) != need:
            raise ValueError(f"known covariate {name!r}{where}: {len(arr)} values, needs {need} (the context's "
                             f"{context_length}, then the next {prediction_length})")
        if np.isnan(arr[context_length:]).all():
            raise ValueError(f"known covariate {name!r}{where}: no values for the horizon (all {prediction_length} "
                             f"future values are missing)")
        out.known[name] = arr
    return out


@dataclass
class GroupRow:
    """One group as a packed row (batch 1): the context patches of every variate, variate-major, then the known
    covariates' horizon patches. Decoding appends one patch per target variate per step."""

    values: Tensor  # [1, L, P], missing values zeroed
    observed: Tensor  # [1, L, P]
    time: Tensor  # [1, L] long: time ids shared by the variates
    variate: Tensor  # [1, L] long: 0..Vt-1 targets, then the known covariates, then the past-only ones
    stats_use: Tensor  # [1, L] bool: the tokens a variate's statistics come from
    num_targets: int
    context_patches: int  # N
    known_horizon_tokens: int = 0  # Vk·Hp: the row's last tokens

    @property
    def stat_id(self) -> Tensor:
        """[1, L] one statistics group per variate (ids from 1: `masked_stats` keeps id 0 for padding)."""
        return self.variate + 1

    @property
    def last_context_time(self) -> Tensor:
        """[1, 1] the time id of the last context patch."""
        return self.time[:, self.context_patches - 1:self.context_patches]

    def target_last_tokens(self) -> Tensor:
        """[1, Vt] the index of each target's last context patch (whose hidden state predicts its next patch)."""
        n = self.context_patches
        return (torch.arange(self.num_targets, device=self.time.device) * n + n - 1)[None]

    def as_dict(self) -> dict[str, Tensor]:
        """The row as `moe_ts.uni2ts.decoding` takes it (values, observed, sample_id, variate, time, stat_id,
        stats_use)."""
        return {"values": self.values, "observed": self.observed, "sample_id": torch.ones_like(self.time),
                "variate": self.variate, "time": self.time, "stat_id": self.stat_id, "stats_use": self.stats_use}


def pack_group_row(targets_vt: np.ndarray, covariates: GroupCovariates | None, patch_size: int,
                   horizon_patches: int, time_ids: str = "observed",
                   device: torch.device | str = "cpu") -> GroupRow:
    """`targets_vt` [Vt, T] (NaN = missing) and its covariates as one row (see the module docstring).

    The context is left-padded with missing values to whole patches, the known covariates' horizon right-padded
    (as uni2ts pads them). time_ids "observed": uni2ts' numbering from the targets' observed values (leading
    patches without any observed target value share time id 0); "position": 0..N-1.
    """
    covariates = covariates or GroupCovariates({}, {})
    vt, t = targets_vt.shape
    known_names, past_names = list(covariates.known), list(covariates.past)
    context_vt = np.concatenate([targets_vt.astype(np.float32)]
                                + [covariates.known[k][None, :t] for k in known_names]
                                + [covariates.past[k][None] for k in past_names], axis=0)
    v = context_vt.shape[0]
    n = math.ceil(t / patch_size)
    padded = np.full((v, n * patch_size), np.nan, dtype=np.float32)
    padded[:, n * patch_size - t:] = context_vt
    values, observed = patchify(torch.from_numpy(padded).to(device), patch_size)  # [V, N, P]
    if time_ids == "observed":
        any_obs = observed[:vt].any(-1).any(0, keepdim=True)  # [1, N]
        time_n = observed_time_ids(any_obs[..., None], torch.ones(1, n, dtype=torch.long, device=device))[0]
    else:
        time_n = torch.arange(n, device=device)
    variate_l = torch.arange(v, device=device).repeat_interleave(n)
    parts = {"values": [values.reshape(v * n, patch_size)], "observed": [observed.reshape(v * n, patch_size)],
             "time": [time_n.repeat(v)], "variate": [variate_l]}
    vk = len(known_names)
    if vk:
        future = np.full((vk, horizon_patches * patch_size), np.nan, dtype=np.float32)
        for i, k in enumerate(known_names):
            given = covariates.known[k][t:t + horizon_patches * patch_size]
            future[i, :len(given)] = given
        f_values, f_observed = patchify(torch.from_numpy(future).to(device), patch_size)  # [Vk, Hp, P]
        parts["values"].append(f_values.reshape(vk * horizon_patches, patch_size))
        parts["observed"].append(f_observed.reshape(vk * horizon_patches, patch_size))
        future_time = time_n.max() + 1 + torch.arange(horizon_patches, device=device)
        parts["time"].append(future_time.repeat(vk))
        parts["variate"].append(torch.arange(vt, vt + vk, device=device).repeat_interleave(horizon_patches))
    row = {key: torch.cat(chunks)[None] for key, chunks in parts.items()}
    stats_use = torch.ones_like(row["time"], dtype=torch.bool)  # the context's tokens and the known horizon's
    return GroupRow(row["values"], row["observed"], row["time"], row["variate"], stats_use, vt, n,
                    vk * horizon_patches)


def per_series(values: object, num_series: int, name: str, kind: str) -> list[object]:
    """A covariate's values for each of `num_series` series: a list with one 1-D array-like per series, a 2-D
    array [B, T], or (one series) a single 1-D array-like."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    if isinstance(values, np.ndarray):
        if values.ndim == 1 and num_series == 1:
            return [values]
        if values.ndim == 2:
            values = list(values)
    elif hasattr(values, "to_numpy") and num_series == 1:  # a pandas Series for the one series
        return [values]
    if not isinstance(values, Sequence) or isinstance(values, (str, bytes)):
        raise ValueError(f"{kind} covariate {name!r}: give one 1-D array per series (a list of {num_series})")
    if num_series == 1 and len(values) and np.ndim(values[0]) == 0:
        return [values]  # a plain list of numbers for the one series
    if len(values) != num_series:
        raise ValueError(f"{kind} covariate {name!r}: values for {len(values)} series, the context has {num_series}")
    return list(values)
