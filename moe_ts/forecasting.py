"""Autoregressive probabilistic forecasting with a KV cache (DESIGN §3 "Forecasting").

The context gives the scaler statistics once; each decoding step samples one patch per sample
path from the mixture head, feeds it back as one new token and reuses the cached keys/values of
everything before it, so a step costs one token rather than the whole prefix. With
`use_kv_cache=False` the whole sequence is re-encoded at each step (same random draws): the
reference the cache is tested against.

Shape legend: B series, S sample paths, H horizon, N patches, P patch size, D model width.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from moe_ts.attention import LayerCache
from moe_ts.forecast_output import DEFAULT_QUANTILES, ForecastOutput
from moe_ts.scaling import PackedLayout, masked_stats, patchify, standardise

if TYPE_CHECKING:
    from moe_ts.model import MoiraiMoEModel


def _as_arrays(contexts: object) -> list[np.ndarray]:
    """Accept a list of 1-D arrays / pandas Series / tensors, a 2-D array/tensor [B, T], or a DataFrame (columns)."""
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
        if isinstance(c, torch.Tensor):
            c = c.detach().cpu().numpy()
        elif hasattr(c, "to_numpy"):
            c = c.to_numpy()
        arr = np.asarray(c, dtype=np.float32)
        if arr.ndim != 1:
            raise ValueError(f"series {i}: context must be 1-D, got shape {arr.shape}")
        out.append(arr)
    return out


def _prepare_contexts(
    arrays: Sequence[np.ndarray], max_length: int, patch_size: int, allow_short_context: bool
) -> list[np.ndarray]:
    prepared = []
    for i, arr in enumerate(arrays):
        arr = arr[-max_length:]
        if np.isinf(arr).any():
            raise ValueError(f"series {i}: context contains inf")
        if len(arr) == 0 or np.isnan(arr).all():
            raise ValueError(f"series {i}: context has no observed value (empty or all NaN)")
        if len(arr) < patch_size and not allow_short_context:
            raise ValueError(
                f"series {i}: context has {len(arr)} points, shorter than one patch ({patch_size}); "
                "pass allow_short_context=True to left-pad it with missing values"
            )
        prepared.append(arr)
    return prepared


def _left_pad(arrays: Sequence[np.ndarray], patch_size: int) -> tuple[Tensor, Tensor]:
    """Left-pad with NaN to a common number of patches → (target [B, N·P], sample_id [B, N])."""
    patches = [math.ceil(len(a) / patch_size) for a in arrays]
    n = max(patches)
    target = np.full((len(arrays), n * patch_size), np.nan, dtype=np.float32)
    sample_id = np.zeros((len(arrays), n), dtype=np.int64)
    for i, (a, k) in enumerate(zip(arrays, patches)):
        target[i, n * patch_size - len(a):] = a
        sample_id[i, n - k:] = 1
    return torch.from_numpy(target), torch.from_numpy(sample_id)


class _Decoder:
    """Runs the model over a growing sequence, with or without the KV cache."""

    def __init__(self, model: "MoiraiMoEModel", normed_bnp: Tensor, layout: PackedLayout, use_cache: bool) -> None:
        self.model = model
        self.use_cache = use_cache
        self.tokens = normed_bnp
        self.positions = layout.position
        self.key_valid = layout.sample_id > 0
        self.caches: list[LayerCache] | None = None

    def prefill(self) -> Tensor:
        """Hidden state of the last context patch [B, D]."""
        mask = PackedLayout.from_sample_id(self.key_valid.long()).attention_mask()
        hidden, caches, _ = self.model.encode(self.tokens, self.positions, mask)
        self.caches = caches if self.use_cache else None
        return hidden[:, -1]

    def expand(self, repeats: int) -> None:
        self.tokens = self.tokens.repeat_interleave(repeats, 0)
        self.positions = self.positions.repeat_interleave(repeats, 0)
        self.key_valid = self.key_valid.repeat_interleave(repeats, 0)
        if self.caches is not None:
            self.caches = [c.expand(repeats) for c in self.caches]

    def step(self, patch_bp: Tensor) -> Tensor:
        """Append one sampled patch to every row; hidden state of it [B, D]."""
        next_pos = self.positions[:, -1:] + 1
        self.tokens = torch.cat((self.tokens, patch_bp[:, None]), dim=1)
        self.positions = torch.cat((self.positions, next_pos), dim=1)
        self.key_valid = torch.cat((self.key_valid, torch.ones_like(self.key_valid[:, :1])), dim=1)
        if self.caches is None:
            return self.prefill()
        mask_b1l = self.key_valid[:, None, :]
        hidden, self.caches, _ = self.model.encode(patch_bp[:, None], next_pos, mask_b1l, self.caches)
        return hidden[:, -1]


@torch.no_grad()
def forecast(
    model: "MoiraiMoEModel",
    contexts: object,
    prediction_length: int,
    num_samples: int = 100,
    quantile_levels: Iterable[float] = DEFAULT_QUANTILES,
    seed: int | None = None,
    batch_size: int = 64,
    context_length: int | None = None,
    use_kv_cache: bool = True,
    allow_short_context: bool = False,
    progress: bool = False,
) -> ForecastOutput:
    """Sample `num_samples` paths of `prediction_length` steps for each context series.

    contexts: list of 1-D arrays / pandas Series / tensors (any lengths, NaN = missing) or a 2-D array.
    context_length: the most recent points used, at most max_seq_len·patch_size (default: what fits the
    model's max_seq_len together with the horizon's patches, and at least half of it).
    progress: show a progress bar over the batches (on a terminal).
    Returns samples [B, S, H], quantiles [B, Q, H] and mean [B, H].
    """
    cfg = model.config
    if prediction_length <= 0:
        raise ValueError(f"prediction_length must be > 0, got {prediction_length}")
    if num_samples <= 0:
        raise ValueError(f"num_samples must be > 0, got {num_samples}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    patch = cfg.patch_size
    horizon_patches = math.ceil(prediction_length / patch)
    if context_length is None:
        # Context and horizon together fit the trained window; a horizon longer than half of it still keeps
        # half the window as context (decoding then runs past the trained positions: RoPE extrapolates).
        context_length = max(cfg.max_seq_len - horizon_patches, cfg.max_seq_len // 2, 1) * patch
    elif not 1 <= context_length <= cfg.max_context:
        raise ValueError(f"context_length must be in 1..{cfg.max_context} (max_seq_len·patch_size), got {context_length}")
    arrays = _prepare_contexts(_as_arrays(contexts), context_length, patch, allow_short_context)
    if not arrays:
        raise ValueError("no context series given")
    levels = tuple(float(q) for q in quantile_levels)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    # Draws are consumed in batch order: the same seed, batch_size and series order give the same samples.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        if seed is not None:
            torch.manual_seed(seed)
        try:
            chunks = []
            starts: Iterable[int] = range(0, len(arrays), batch_size)
            if progress:
                from tqdm import tqdm

                starts = tqdm(starts, desc="forecast", unit="batch", disable=None)
            for start in starts:
                chunk = arrays[start:start + batch_size]
                chunks.append(_sample_paths(model, chunk, horizon_patches, num_samples, use_kv_cache))
            samples = torch.cat(chunks, dim=0)[..., :prediction_length].numpy()
        finally:
            model.train(was_training)
    return ForecastOutput.from_samples(samples, levels)


def _sample_paths(
    model: "MoiraiMoEModel", arrays: Sequence[np.ndarray], horizon_patches: int, num_samples: int, use_cache: bool
) -> Tensor:
    """[B, S, horizon_patches·P] sample paths on the original scale."""
    cfg = model.config
    param = next(model.parameters())
    target, sample_id = _left_pad(arrays, cfg.patch_size)
    values, observed = patchify(target.to(param.device), cfg.patch_size)
    layout = PackedLayout.from_sample_id(sample_id.to(param.device))
    loc, scale, _ = masked_stats(values, observed, layout.sample_id > 0, layout.sample_id, cfg.min_scale)
    normed = standardise(values, observed, loc, scale, cfg.missing_values).to(param.dtype)

    decoder = _Decoder(model, normed, layout, use_cache)
    hidden = decoder.prefill().repeat_interleave(num_samples, 0)
    decoder.expand(num_samples)
    steps = []
    for step in range(horizon_patches):
        patch_bp = model.head.distribution(hidden).sample().to(param.dtype)
        steps.append(patch_bp)
        if step + 1 < horizon_patches:
            hidden = decoder.step(patch_bp)
    paths = torch.cat(steps, dim=-1).float()  # [B·S, H']
    b = len(arrays)
    paths = paths.view(b, num_samples, -1)
    loc_b = loc[:, -1, 0].float().view(b, 1, 1)
    scale_b = scale[:, -1, 0].float().view(b, 1, 1)
    return (loc_b + scale_b * paths).cpu()
