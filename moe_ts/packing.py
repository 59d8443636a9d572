"""Patching, packed-sequence bookkeeping, masked normalisation and forecast contexts (docs/ARCHITECTURE.md §2).

Shape legend: B batch, N patches, P patch size, M packed samples per row (+1 for padding id 0), T context length.
A packed row holds several series ("samples"), each a contiguous run of whole patches with
sample id 1, 2, ... (at most N); id 0 marks padding patches.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor


def patchify(target_bl: Tensor, patch_size: int) -> tuple[Tensor, Tensor]:
    """[B, N·P] values with NaN for missing → (values [B, N, P] with missing zeroed, observed mask [B, N, P])."""
    b, length = target_bl.shape
    if length % patch_size:
        raise ValueError(f"target length {length} is not a multiple of the patch size {patch_size}")
    patches = target_bl.reshape(b, length // patch_size, patch_size)
    observed = ~torch.isnan(patches)
    return torch.where(observed, patches, torch.zeros_like(patches)), observed


@dataclass
class PackedLayout:
    """Where each sample sits in a packed row."""

    sample_id: Tensor  # [B, N] long, 0 = padding
    position: Tensor  # [B, N] long, patch index within its sample (0 for padding)
    length: Tensor  # [B, N] long, number of patches of the patch's sample (0 for padding)

    @classmethod
    def from_sample_id(cls, sample_id_bn: Tensor) -> "PackedLayout":
        sid = sample_id_bn.long()
        b, n = sid.shape
        num_ids = n + 1  # ids are 0..N (a sample has at least one patch): no host sync for max(id)
        idx = torch.arange(n, device=sid.device).expand(b, n)
        start = torch.full((b, num_ids), n, dtype=torch.long, device=sid.device)
        start = start.scatter_reduce(1, sid, idx, reduce="amin")
        counts = torch.zeros((b, num_ids), dtype=torch.long, device=sid.device).scatter_add_(1, sid, torch.ones_like(sid))
        valid = sid > 0
        position = torch.where(valid, idx - start.gather(1, sid), torch.zeros_like(sid))
        length = torch.where(valid, counts.gather(1, sid), torch.zeros_like(sid))
        return cls(sid, position, length)

    def attention_mask(self) -> Tensor:
        """[B, N, N] True where query i may attend key j: same sample, j ≤ i; padding attends only to itself."""
        n = self.sample_id.shape[1]
        causal = torch.ones(n, n, dtype=torch.bool, device=self.sample_id.device).tril()
        same = self.sample_id[:, :, None] == self.sample_id[:, None, :]
        real = (self.sample_id > 0)[:, None, :]
        eye = torch.eye(n, dtype=torch.bool, device=self.sample_id.device)
        return (same & causal & real) | eye

    def stats_patches(self, stats_ratio: float) -> Tensor:
        """[B, N] True on the leading ⌈r·n⌉ patches of each sample: they give the statistics and get no loss."""
        lead = torch.ceil(self.length.double() * stats_ratio).long().clamp(min=1)
        return (self.sample_id > 0) & (self.position < lead)


def masked_stats(
    values_bnp: Tensor, observed_bnp: Tensor, use_bn: Tensor, sample_id_bn: Tensor, min_scale: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample mean and scale over observed values of the patches where `use_bn` is True.

    Float64, Bessel-corrected variance, scale = sqrt(var + min_scale) as uni2ts; a constant or
    all-missing sample gets a finite scale (never NaN/inf). Returns (loc [B, N, 1], scale [B, N, 1],
    informative [B, N]) broadcast back to every patch of the sample; `informative` is False where the
    statistics rest on fewer than 2 observed values or a variance below `min_scale` (the floor then
    sets the scale, and later values of the sample normalise to thousands).
    """
    b, n, _ = values_bnp.shape
    sid = sample_id_bn.long()
    num_ids = n + 1  # ids are 0..N: no host sync for max(id)
    weight = (observed_bnp & use_bn[..., None]).double()
    x = values_bnp.double() * weight

    def per_sample(v_bn: Tensor) -> Tensor:
        return torch.zeros(b, num_ids, dtype=torch.float64, device=v_bn.device).scatter_add_(1, sid, v_bn)

    count = per_sample(weight.sum(-1))
    loc = per_sample(x.sum(-1)) / count.clamp(min=1.0)
    loc_bn = loc.gather(1, sid)
    sq = ((values_bnp.double() - loc_bn[..., None]) ** 2 * weight).sum(-1)
    var = per_sample(sq) / (count - 1.0).clamp(min=1.0)
    scale_bn = torch.sqrt(var + min_scale).gather(1, sid)
    informative_bn = ((count >= 2) & (var >= min_scale)).gather(1, sid)
    return loc_bn[..., None].to(values_bnp.dtype), scale_bn[..., None].to(values_bnp.dtype), informative_bn


def num_patches(length: int, patch_size: int) -> int:
    return math.ceil(length / patch_size)


def standardise(values_bnp: Tensor, observed_bnp: Tensor, loc: Tensor, scale: Tensor, missing_values: str,
                sample_id_bn: Tensor | None = None) -> Tensor:
    """(x - loc) / scale on observed values; a missing value becomes 0 ("zero_normalized") or
    (0 - loc) / scale ("zero_raw", uni2ts' imputation before scaling); "interpolate" first fills the runs of
    missing values shorter than a patch (`interpolate_short_runs`, within `sample_id_bn`'s samples; None: each
    row is one series) and sets the longer gaps to 0. `values_bnp` holds 0 where missing."""
    if missing_values == "interpolate":
        filled_bnp, fill_bnp = interpolate_short_runs(values_bnp, observed_bnp, sample_id_bn)
        normed = (filled_bnp - loc) / scale
        return torch.where(observed_bnp | fill_bnp, normed, torch.zeros_like(normed))
    normed = (values_bnp - loc) / scale
    if missing_values == "zero_raw":
        return normed
    if missing_values == "zero_normalized":
        return torch.where(observed_bnp, normed, torch.zeros_like(normed))
    raise ValueError(f"unknown missing_values mode {missing_values!r} (zero_normalized | zero_raw | interpolate)")


def interpolate_short_runs(values_bnp: Tensor, observed_bnp: Tensor,
                           sample_id_bn: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(values with every run of missing values shorter than a patch linearly interpolated between the observed
    values on either side, mask [B, N, P] of the filled values). A run at a series' edge, across a sample
    boundary or of a patch or more stays missing.

    Why: with a missing value read as 0 (the mean) and no mask channel, a head that averages the patches one,
    two, ... periods back averages those zeros in as values: 20% scattered NaN shrink a continued cycle by about
    20%. A short run is better filled from its neighbours; a long gap, read as a flat stretch at the mean, does
    not hurt (EXPERIMENTS.md, 2026-12-07, part 2)."""
    b, n, p = values_bnp.shape
    x_bl = values_bnp.reshape(b, n * p)
    obs_bl = observed_bnp.reshape(b, n * p)
    length = n * p
    idx = torch.arange(length, device=x_bl.device).expand(b, length)
    prev_bl = torch.where(obs_bl, idx, torch.full_like(idx, -1)).cummax(dim=1).values
    nxt_bl = torch.where(obs_bl, idx, torch.full_like(idx, length)).flip(1).cummin(dim=1).values.flip(1)
    fill_bl = ~obs_bl & (prev_bl >= 0) & (nxt_bl < length) & (nxt_bl - prev_bl - 1 < p)
    if sample_id_bn is not None:
        sid_bl = sample_id_bn.long().repeat_interleave(p, dim=1)
        same_prev = sid_bl.gather(1, prev_bl.clamp(0, length - 1)) == sid_bl
        same_next = sid_bl.gather(1, nxt_bl.clamp(0, length - 1)) == sid_bl
        fill_bl &= same_prev & same_next & (sid_bl > 0)
    lo = x_bl.gather(1, prev_bl.clamp(0, length - 1))
    hi = x_bl.gather(1, nxt_bl.clamp(0, length - 1))
    frac = (idx - prev_bl).to(x_bl.dtype) / (nxt_bl - prev_bl).clamp(min=1).to(x_bl.dtype)
    filled_bl = torch.where(fill_bl, lo + frac * (hi - lo), x_bl)
    return filled_bl.reshape(b, n, p), fill_bl.reshape(b, n, p)


# Forecast contexts: user input → validated arrays → left-padded packed rows.

def as_context_arrays(contexts: object) -> list[np.ndarray]:
    """Accept a list of 1-D arrays / pandas Series / tensors, a 2-D array/tensor [B, T], a DataFrame (columns), or an
    iterable of GluonTS data entries (dicts with a 1-D "target", e.g. a `ListDataset`)."""
    if isinstance(contexts, torch.Tensor):
        contexts = contexts.detach().cpu().numpy()
    if isinstance(contexts, np.ndarray):
        if contexts.ndim == 1:
            contexts = contexts[None]
        if contexts.ndim != 2:
            raise ValueError(f"context array must be 1-D or 2-D [B, T], got shape {contexts.shape}")
        return [np.asarray(row, dtype=np.float32) for row in contexts]
    if hasattr(contexts, "columns") and hasattr(contexts, "to_numpy"):  # a pandas DataFrame: one series per column
        return [np.asarray(contexts[c].to_numpy(), dtype=np.float32) for c in contexts.columns]
    if hasattr(contexts, "to_numpy") and not isinstance(contexts, (list, tuple)):
        return [np.asarray(contexts.to_numpy(), dtype=np.float32)]  # a single pandas Series
    out = []
    for i, c in enumerate(contexts):  # type: ignore[union-attr]
        if isinstance(c, Mapping) and "target" in c:  # a GluonTS data entry (ListDataset, FileDataset, ...)
            c = c["target"]
        if isinstance(c, torch.Tensor):
            c = c.detach().cpu().numpy()
        elif hasattr(c, "to_numpy"):
            c = c.to_numpy()
        arr = np.asarray(c, dtype=np.float32)
        if arr.ndim != 1:
            raise ValueError(f"series {i}: context must be 1-D, got shape {arr.shape}")
        out.append(arr)
    return out


def prepare_contexts(
    arrays: Sequence[np.ndarray], max_length: int, min_length: int, allow_short_context: bool,
    min_name: str = "one patch",
) -> list[np.ndarray]:
    """The last `max_length` points of each series, refused by series index if unusable (inf, nothing
    observed, shorter than `min_length` points, the model's `min_name`, unless `allow_short_context`)."""
    prepared = []
    for i, arr in enumerate(arrays):
        arr = arr[-max_length:]
        if np.isinf(arr).any():
            raise ValueError(f"series {i}: context contains inf")
        if len(arr) == 0 or np.isnan(arr).all():
            raise ValueError(f"series {i}: context has no observed value (empty or all NaN)")
        if len(arr) < min_length and not allow_short_context:
            raise ValueError(
                f"series {i}: context has {len(arr)} points, shorter than {min_name} ({min_length}); "
                "pass allow_short_context=True to left-pad it with missing values"
            )
        prepared.append(arr)
    return prepared


def left_pad(arrays: Sequence[np.ndarray], patch_size: int) -> tuple[Tensor, Tensor]:
    """Left-pad with NaN to a common number of patches → (target [B, N·P], sample_id [B, N])."""
    patches = [math.ceil(len(a) / patch_size) for a in arrays]
    n = max(patches)
    target = np.full((len(arrays), n * patch_size), np.nan, dtype=np.float32)
    sample_id = np.zeros((len(arrays), n), dtype=np.int64)
    for i, (a, k) in enumerate(zip(arrays, patches)):
        target[i, n * patch_size - len(a):] = a
        sample_id[i, n - k:] = 1
    return torch.from_numpy(target), torch.from_numpy(sample_id)


def observed_time_ids(observed_bnp: Tensor, sample_id_bn: Tensor) -> Tensor:
    """[B, N] uni2ts' time ids for one left-padded series per row: patches before the first patch with an
    observed value get 0, like that patch; from there on each patch counts one (padding gets 0)."""
    seen_bn = ((observed_bnp.any(-1)) & (sample_id_bn > 0)).long().cummax(dim=1).values
    return (seen_bn.cumsum(dim=1) - 1).clamp(min=0)


def time_causal_mask(sample_id_bn: Tensor, time_bn: Tensor) -> Tensor:
    """[B, N, N] True where query i may attend key j: same sample and time[j] <= time[i]; padding sees itself.

    With time = position within the sample this is `PackedLayout.attention_mask`."""
    n = sample_id_bn.shape[1]
    same = sample_id_bn[:, :, None] == sample_id_bn[:, None, :]
    earlier = time_bn[:, None, :] <= time_bn[:, :, None]
    real = (sample_id_bn > 0)[:, None, :]
    return (same & earlier & real) | torch.eye(n, dtype=torch.bool, device=sample_id_bn.device)


# Any-variate rows (docs/ARCHITECTURE.md §2, "Objective"): a sample of V variates is packed variate-major, each
# variate a contiguous run of the same number of patches (the same time window).

def variate_series_ids(sample_id_bn: Tensor, variate_bn: Tensor) -> Tensor:
    """[B, N] one id 1, 2, ... per (sample, variate) run of a variate-major packed row, 0 for padding.

    Each variate of a multivariate sample is then a series of its own for `PackedLayout` (its own statistics,
    positions that are its time ids, next-patch pairs that stay inside it); with every variate id 0 the ids are the
    sample ids renumbered in order of appearance."""
    sid = sample_id_bn.long()
    var = variate_bn.long()
    real = sid > 0
    starts = real.clone()
    starts[:, 1:] &= (sid[:, 1:] != sid[:, :-1]) | (var[:, 1:] != var[:, :-1])
    return torch.where(real, starts.long().cumsum(dim=1), torch.zeros_like(sid))
