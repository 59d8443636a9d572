"""Autoregressive probabilistic forecasting with a KV cache (docs/ARCHITECTURE.md §2, "Forecasting").

The context gives the scaler statistics once; each decoding step predicts the next patch's mixture
distribution, feeds a patch back as one new token and reuses the cached keys/values of everything
before it, so a step costs one token rather than the whole prefix. With `use_kv_cache=False` the
whole sequence is re-encoded at each step (same random draws): the reference the cache is tested
against.

What is fed back is the `decode` mode:
- "median": one conditioning path per series. Each step draws the S output samples (and
  at least MEDIAN_DRAWS draws in all) from the step's distribution and feeds back their per-point
  median. The returned samples are independent across steps given that path: each step's
  marginals are the model's, but no path carries its own earlier draws.
- "mean": like "median" but feeds back the distribution's mean.
- "sample" (default): each of the S paths emits its own draws and feeds back
  center + feedback_noise · (draw − center), where center is the center of the mixture component the
  draw came from (`Mixture.component_centers`). feedback_noise = 1 is plain ancestral sampling; there
  each path feeds back per-point noise the model reads as volatility, its next distribution widens,
  heavier draws follow, and over tens of steps most paths run away (on the LSF validation split, MSE
  up to 37× Seasonal Naive's at horizon 720; EXPERIMENTS.md, 2026-12-02 (session 2)). A smaller value
  damps the loop while the paths still diverge through the component choices and the damped noise.
- "uni2ts": ancestral sampling as uni2ts' Moirai-MoE forecaster decodes: each path re-standardises its
  whole sequence with statistics that include its own sampled patches and re-encodes it at every step
  (no KV cache: every token's normalisation changes). For converted uni2ts checkpoints; it costs the
  prefix at each step (docs/ARCHITECTURE.md §2, "Forecasting").

Shape legend: B series, S sample paths, H horizon, N patches, P patch size, D model width, K patches predicted
per position (`predict_patches`), Q values a decoding step emits (patches_per_step·P).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from moe_ts.attention import LayerCache
from moe_ts.distributions import ScaledMixture
from moe_ts.forecast_output import DEFAULT_QUANTILES, ForecastOutput
from moe_ts.scaling import PackedLayout, masked_stats, patchify, standardise

if TYPE_CHECKING:
    from moe_ts.network import MoiraiMoENetwork as MoiraiMoEModel  # forecasting needs only the network


DECODE_MODES = ("median", "mean", "sample", "uni2ts")
MEDIAN_DRAWS = 100  # draws per step for the fed-back median ("median" mode) when fewer samples are asked for
DEFAULT_FEEDBACK_NOISE = 0.5  # decode="sample": share of each draw's deviation that is fed back (EXPERIMENTS.md)


def as_context_arrays(contexts: object) -> list[np.ndarray]:
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


class _Decoder:
    """Runs the model over a growing sequence, with or without the KV cache."""

    def __init__(self, model: "MoiraiMoEModel", normed_bnp: Tensor, layout: PackedLayout, use_cache: bool,
                 positions_bn: Tensor | None = None) -> None:
        self.model = model
        self.use_cache = use_cache
        self.tokens = normed_bnp
        self.positions = layout.position if positions_bn is None else positions_bn
        self.key_valid = layout.sample_id > 0
        self.caches: list[LayerCache] | None = None

    def prefill(self) -> Tensor:
        """Hidden state of the last context patch [B, D]."""
        mask = time_causal_mask(self.key_valid.long(), self.positions)
        hidden, caches, _ = self.model.encode(self.tokens, self.positions, mask)
        self.caches = caches if self.use_cache else None
        return hidden[:, -1]

    def expand(self, repeats: int) -> None:
        self.tokens = self.tokens.repeat_interleave(repeats, 0)
        self.positions = self.positions.repeat_interleave(repeats, 0)
        self.key_valid = self.key_valid.repeat_interleave(repeats, 0)
        if self.caches is not None:
            self.caches = [c.expand(repeats) for c in self.caches]

    def step(self, patches_bkp: Tensor) -> Tensor:
        """Append K patches to every row; hidden state of the last of them [B, D]."""
        k = patches_bkp.shape[1]
        new_pos = self.positions[:, -1:] + torch.arange(1, k + 1, device=self.positions.device)
        self.tokens = torch.cat((self.tokens, patches_bkp), dim=1)
        self.positions = torch.cat((self.positions, new_pos), dim=1)
        self.key_valid = torch.cat((self.key_valid, torch.ones_like(self.key_valid[:, :k])), dim=1)
        if self.caches is None:
            return self.prefill()
        length = self.key_valid.shape[1]
        causal_kl = torch.ones(k, length, dtype=torch.bool, device=self.key_valid.device).tril(length - k)
        mask_bkl = self.key_valid[:, None, :] & causal_kl
        hidden, self.caches, _ = self.model.encode(patches_bkp, new_pos, mask_bkl, self.caches)
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
    decode: str = "sample",
    patches_per_step: int | None = None,
    feedback_noise: float | None = None,
    progress: bool = False,
) -> ForecastOutput:
    """Sample `num_samples` paths of `prediction_length` steps for each context series.

    contexts: list of 1-D arrays / pandas Series / tensors (any lengths, NaN = missing) or a 2-D array.
    context_length: the most recent points used, at most max_seq_len·patch_size (default: what fits the
    model's max_seq_len together with the horizon's patches, and at least half of it).
    decode: what each step feeds back, "median" | "mean" | "sample" | "uni2ts" (see the module docstring).
    patches_per_step: how many of the model's `predict_patches` predicted patches each decoding step emits
    and feeds back (default: all of them). 1 decodes a multi-patch model patch by patch, as a next-patch model.
    feedback_noise: decode="sample" only, in [0, 1]: each path feeds back its draw's component center plus
    this share of the draw's deviation from it (default DEFAULT_FEEDBACK_NOISE; 1 = plain ancestral sampling).
    progress: show a progress bar over the batches (on a terminal).
    Returns samples [B, S, H], quantiles [B, Q, H] and mean [B, H].
    """
    cfg = model.config
    if decode not in DECODE_MODES:
        raise ValueError(f"decode must be one of {DECODE_MODES}, got {decode!r}")
    if prediction_length <= 0:
        raise ValueError(f"prediction_length must be > 0, got {prediction_length}")
    if num_samples <= 0:
        raise ValueError(f"num_samples must be > 0, got {num_samples}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    per_step = cfg.predict_patches if patches_per_step is None else patches_per_step
    if not 1 <= per_step <= cfg.predict_patches:
        raise ValueError(f"patches_per_step must be in 1..{cfg.predict_patches} (the model's predict_patches), "
                         f"got {patches_per_step}")
    if feedback_noise is not None and decode != "sample":
        raise ValueError(f"feedback_noise applies to decode='sample', not {decode!r}")
    noise = DEFAULT_FEEDBACK_NOISE if feedback_noise is None else float(feedback_noise)
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"feedback_noise must be in [0, 1], got {feedback_noise}")
    if decode == "uni2ts" and per_step != cfg.predict_patches:
        raise ValueError("decode='uni2ts' emits all predicted patches per step; patches_per_step does not apply")
    patch = cfg.patch_size
    horizon_patches = math.ceil(prediction_length / patch)
    if context_length is None:
        # Context and horizon together fit the trained window; a horizon longer than half of it still keeps
        # half the window as context (decoding then runs past the trained positions: RoPE extrapolates).
        context_length = max(cfg.max_seq_len - horizon_patches, cfg.max_seq_len // 2, 1) * patch
    elif not 1 <= context_length <= cfg.max_context:
        raise ValueError(f"context_length must be in 1..{cfg.max_context} (max_seq_len·patch_size), got {context_length}")
    arrays = _prepare_contexts(as_context_arrays(contexts), context_length, patch, allow_short_context)
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
                chunks.append(_sample_paths(model, chunk, horizon_patches, num_samples, use_kv_cache, decode,
                                            per_step, noise))
            samples = torch.cat(chunks, dim=0)[..., :prediction_length].numpy()
        finally:
            model.train(was_training)
    return ForecastOutput.from_samples(samples, levels)


def prepare_decoder(
    model: "MoiraiMoEModel", arrays: Sequence[np.ndarray], use_cache: bool = True
) -> tuple[_Decoder, Tensor, Tensor]:
    """Left-pad and standardise `arrays` with the whole context's statistics → (decoder, loc, scale).

    loc and scale are [B, N, 1]; the decoder holds the normalised context and is ready for `prefill()`.
    With `time_ids: observed` (converted uni2ts models) the patches are numbered by `observed_time_ids`.
    Forecasting and the test tying it to the training objective both start here.
    """
    cfg = model.config
    param = next(model.parameters())
    target, sample_id = _left_pad(arrays, cfg.patch_size)
    values, observed = patchify(target.to(param.device), cfg.patch_size)
    layout = PackedLayout.from_sample_id(sample_id.to(param.device))
    loc, scale, _ = masked_stats(values, observed, layout.sample_id > 0, layout.sample_id, cfg.min_scale)
    normed = standardise(values, observed, loc, scale, cfg.missing_values).to(param.dtype)
    positions = observed_time_ids(observed, layout.sample_id) if cfg.time_ids == "observed" else None
    return _Decoder(model, normed, layout, use_cache, positions), loc, scale


def _sample_paths(
    model: "MoiraiMoEModel", arrays: Sequence[np.ndarray], horizon_patches: int, num_samples: int, use_cache: bool,
    decode: str, per_step: int, feedback_noise: float,
) -> Tensor:
    """[B, S, horizon_patches·P] sample paths on the original scale; each step emits `per_step` patches."""
    if decode == "uni2ts":
        return uni2ts_paths(model, arrays, horizon_patches, num_samples)
    param = next(model.parameters())
    decoder, loc, scale = prepare_decoder(model, arrays, use_cache)
    hidden = decoder.prefill()
    if decode == "sample":
        hidden = hidden.repeat_interleave(num_samples, 0)
        decoder.expand(num_samples)
    emitted = per_step * model.config.patch_size  # Q: the leading values of the head's K·P that a step uses
    num_steps = math.ceil(horizon_patches / per_step)
    steps = []
    for step in range(num_steps):
        distr = model.head.distribution(hidden)  # batch shape [B(·S), K·P]
        if decode == "sample":
            draws_bq, centers_bq = (t[..., :emitted].to(param.dtype) for t in distr.sample_with_centers())
            steps.append(draws_bq)
            fed_bq = draws_bq if feedback_noise == 1.0 else centers_bq + feedback_noise * (draws_bq - centers_bq)
        else:
            num_draws = max(num_samples, MEDIAN_DRAWS) if decode == "median" else num_samples
            draws_sbq = distr.sample((num_draws,))[..., :emitted].to(param.dtype)
            steps.append(draws_sbq[:num_samples].transpose(0, 1).reshape(-1, emitted))  # [B·S, Q]
            fed_bq = (draws_sbq.median(dim=0).values if decode == "median"
                      else distr.mean[..., :emitted].to(param.dtype))
        if step + 1 < num_steps:
            hidden = decoder.step(fed_bq.unflatten(-1, (per_step, -1)))
    paths = torch.cat(steps, dim=-1)[:, :horizon_patches * model.config.patch_size].float()  # [B·S, H']
    b = len(arrays)
    paths = paths.view(b, num_samples, -1)
    loc_b = loc[:, -1, 0].float().view(b, 1, 1)
    scale_b = scale[:, -1, 0].float().view(b, 1, 1)
    return (loc_b + scale_b * paths).cpu()


def _restandardised_step(
    model: "MoiraiMoEModel", values_bnp: Tensor, observed_bnp: Tensor, sample_id_bn: Tensor, time_bn: Tensor
) -> ScaledMixture:
    """Statistics over every observed value (context and sampled patches), standardise, encode the whole
    sequence: the next-patch distribution [B, K·P] on the original scale (uni2ts' per-step computation)."""
    cfg = model.config
    param = next(model.parameters())
    loc, scale, _ = masked_stats(values_bnp, observed_bnp, sample_id_bn > 0, sample_id_bn, cfg.min_scale)
    normed = standardise(values_bnp, observed_bnp, loc, scale, cfg.missing_values).to(param.dtype)
    hidden, _, _ = model.encode(normed, time_bn, time_causal_mask(sample_id_bn, time_bn))
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
    target, sample_id = _left_pad(arrays, cfg.patch_size)
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
    hidden, _, _ = model.encode(normed, row["time"], mask, variate_bn=row["variate"])
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
    if prediction_length <= 0 or num_samples <= 0:
        raise ValueError(f"prediction_length and num_samples must be > 0, got {prediction_length}, {num_samples}")
    arrays = as_context_arrays(group)
    if not arrays or len({len(a) for a in arrays}) != 1:
        raise ValueError(f"a group needs series of one length, got lengths {sorted({len(a) for a in arrays})}")
    cfg = model.config
    horizon_patches = math.ceil(prediction_length / cfg.patch_size)
    if context_length is None:  # all variates' context patches and the horizon's fit the trained window
        context_length = max((cfg.max_seq_len - horizon_patches * len(arrays)) // len(arrays), 1) * cfg.patch_size
    group_vt = np.stack(arrays)[:, -context_length:]
    if np.isinf(group_vt).any() or np.isnan(group_vt).all():
        raise ValueError("group: the context contains inf, or no observed value")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        if seed is not None:
            torch.manual_seed(seed)
        try:
            samples = group_paths(model, group_vt, horizon_patches, num_samples)[..., :prediction_length].numpy()
        finally:
            model.train(was_training)
    return ForecastOutput.from_samples(samples, tuple(float(q) for q in quantile_levels))
