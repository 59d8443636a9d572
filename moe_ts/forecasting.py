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

`head="horizon"` decodes with the long-horizon head of a model that has one (`horizon_patches` > 0) instead of
the next-patch head: each step emits and feeds back up to horizon_patches patches, all placed from one hidden state.

Shape legend: B series, S sample paths, H horizon, N patches, P patch size, D model width, K patches predicted
per position by the decoding head (`predict_patches`, or `horizon_patches` with head="horizon"), Q values a
decoding step emits (patches_per_step·P).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from moe_ts.attention import LayerCache, repeated_rows
from moe_ts.decode_options import MEDIAN_DRAWS, DecodeOptions
from moe_ts.device import to_device
from moe_ts.distributions import RowStreams, row_streams
from moe_ts.forecast_harness import batch_seeds, check_request, context_arrays, forecast_batches
from moe_ts.forecast_output import DEFAULT_QUANTILES, ForecastOutput
from moe_ts.packing import (PackedLayout, left_pad, masked_stats, observed_time_ids, patchify, prepare_contexts,
                            standardise, time_causal_mask)
from moe_ts.uni2ts.decoding import uni2ts_paths

if TYPE_CHECKING:
    from moe_ts.config import ModelConfig
    from moe_ts.network import MoiraiMoENetwork as MoiraiMoEModel  # forecasting needs only the network


class _Decoder:
    """Runs the model over a growing sequence, with or without the KV cache.

    The tokens, their positions, the key mask, the KV caches and RoPE's table are sized once for the whole
    forecast (`extra_tokens` beyond the context) and written in place at each step; nothing in a step reads a
    value back to the host."""

    def __init__(self, model: "MoiraiMoEModel", normed_bnp: Tensor, layout: PackedLayout, use_cache: bool,
                 positions_bn: Tensor | None = None, extra_tokens: int = 0) -> None:
        self.model = model
        self.use_cache = use_cache
        b, n, p = normed_bnp.shape
        self.length = n
        self._tokens = normed_bnp.new_empty(b, n + extra_tokens, p)
        self._positions = layout.position.new_empty(b, n + extra_tokens)
        self._key_valid = torch.ones(b, n + extra_tokens, dtype=torch.bool, device=normed_bnp.device)
        self._tokens[:, :n] = normed_bnp
        self._positions[:, :n] = layout.position if positions_bn is None else positions_bn
        self._key_valid[:, :n] = layout.sample_id > 0
        self.rope_table = model.rope_table(n + extra_tokens)  # positions never exceed a token's index
        self.caches: list[LayerCache] | None = None

    @property
    def tokens(self) -> Tensor:
        """The normalised patches so far [B, L, P]."""
        return self._tokens[:, :self.length]

    @property
    def positions(self) -> Tensor:
        return self._positions[:, :self.length]

    @property
    def key_valid(self) -> Tensor:
        return self._key_valid[:, :self.length]

    def prefill(self) -> Tensor:
        """Hidden state of the last context patch [B, D]."""
        mask = time_causal_mask(self.key_valid.long(), self.positions)
        caches = self.model.empty_caches(self._tokens.shape[0], self._tokens.shape[1]) if self.use_cache else None
        hidden, caches, _ = self.model(self.tokens, self.positions, mask, caches, rope_table=self.rope_table)
        self.caches = caches if self.use_cache else None
        return hidden[:, -1]

    def expand(self, repeats: int) -> None:
        """Repeat every row `repeats` times (one copy per sample path)."""
        rows = repeated_rows(self._tokens.shape[0], repeats, self._tokens.device)
        self._tokens, self._positions, self._key_valid = (t.index_select(0, rows) for t in
                                                          (self._tokens, self._positions, self._key_valid))
        if self.caches is not None:
            self.caches = [c.expand(repeats) for c in self.caches]

    def _grow(self, capacity: int) -> None:
        """Room for `capacity` tokens (only when a caller steps past what it reserved)."""
        b, old, p = self._tokens.shape
        extra = max(capacity, 2 * old) - old
        self._tokens = torch.cat((self._tokens, self._tokens.new_empty(b, extra, p)), 1)
        self._positions = torch.cat((self._positions, self._positions.new_empty(b, extra)), 1)
        self._key_valid = torch.cat((self._key_valid, self._key_valid.new_ones(b, extra)), 1)
        self.rope_table = self.model.rope_table(old + extra)

    def step(self, patches_bkp: Tensor) -> Tensor:
        """Append K patches to every row; hidden state of the last of them [B, D]."""
        k = patches_bkp.shape[1]
        start, end = self.length, self.length + k
        if end > self._tokens.shape[1]:
            self._grow(end)
        new_pos = self._positions[:, start - 1:start] + torch.arange(1, k + 1, device=self._positions.device)
        self._tokens[:, start:end] = patches_bkp
        self._positions[:, start:end] = new_pos
        self.length = end
        if self.caches is None:
            return self.prefill()
        mask_bkl = self.key_valid[:, None, :]
        if k > 1:
            mask_bkl = mask_bkl & torch.ones(k, end, dtype=torch.bool, device=mask_bkl.device).tril(end - k)
        hidden, self.caches, _ = self.model(patches_bkp, new_pos, mask_bkl, self.caches, rope_table=self.rope_table)
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
    head: str = "next",
) -> ForecastOutput:
    """Sample `num_samples` paths of `prediction_length` steps for each context series.

    contexts: list of 1-D arrays / pandas Series / tensors (any lengths, NaN = missing) or a 2-D array.
    context_length: the most recent points used, at most max_seq_len·patch_size (default: what fits the
    model's max_seq_len together with the horizon's patches, and at least half of it).
    decode, patches_per_step, feedback_noise, use_kv_cache: the `DecodeOptions` (see the module docstring).
    patches_per_step: how many of the model's `predict_patches` predicted patches each decoding step emits
    and feeds back (default: all of them). 1 decodes a multi-patch model patch by patch, as a next-patch model.
    feedback_noise: decode="sample" only, in [0, 1]: each path feeds back its draw's component center plus
    this share of the draw's deviation from it (default DEFAULT_FEEDBACK_NOISE; 1 = plain ancestral sampling).
    progress: show a progress bar over the batches (on a terminal).
    head: "next" (default) decodes with the next-patch head; "horizon" with the long-horizon head of a model with
    `horizon_patches` = K > 0: each step emits and feeds back K patches (or `patches_per_step` of them), so the
    patches after the first come from one hidden state instead of from fed-back forecasts.
    Returns samples [B, S, H], quantiles [B, Q, H] and mean [B, H] (`moe_ts.forecast_harness`).
    """
    cfg = model.config
    options = DecodeOptions(decode, patches_per_step, feedback_noise, use_kv_cache, head)
    check_request(prediction_length, num_samples, batch_size)
    per_step = options.patches_for(cfg.predict_patches, cfg.horizon_patches)
    horizon_patches = math.ceil(prediction_length / cfg.patch_size)
    context_length = _checked_context_length(cfg, context_length, horizon_patches)
    arrays = prepare_contexts(context_arrays(contexts), context_length, cfg.patch_size, allow_short_context)
    return forecast_batches(
        model, arrays, lambda chunk: _sample_paths(model, chunk, horizon_patches, num_samples, options, per_step),
        prediction_length, quantile_levels, seed, batch_size, progress, row_streams=options.decode != "uni2ts")


def _checked_context_length(cfg: "ModelConfig", context_length: int | None, horizon_patches: int) -> int:
    """`context_length` checked against the model's window, or the default for this horizon."""
    if context_length is None:
        # Context and horizon together fit the trained window; a horizon longer than half of it still keeps
        # half the window as context (decoding then runs past the trained positions: RoPE extrapolates).
        return max(cfg.max_seq_len - horizon_patches, cfg.max_seq_len // 2, 1) * cfg.patch_size
    if not 1 <= context_length <= cfg.max_context:
        raise ValueError(f"context_length must be in 1..{cfg.max_context} (max_seq_len·patch_size), got {context_length}")
    return context_length


def prepare_decoder(
    model: "MoiraiMoEModel", arrays: Sequence[np.ndarray], use_cache: bool = True, extra_tokens: int = 0
) -> tuple[_Decoder, Tensor, Tensor]:
    """Left-pad and standardise `arrays` with the whole context's statistics → (decoder, loc, scale).

    loc and scale are [B, N, 1]; the decoder holds the normalised context and is ready for `prefill()`, with
    room reserved for `extra_tokens` fed-back patches.
    With `time_ids: observed` (converted uni2ts models) the patches are numbered by `observed_time_ids`.
    Forecasting and the test tying it to the training objective both start here.
    """
    cfg = model.config
    param = next(model.parameters())
    target, sample_id = left_pad(arrays, cfg.patch_size)
    values, observed = patchify(to_device(target, param.device), cfg.patch_size)
    layout = PackedLayout.from_sample_id(to_device(sample_id, param.device))
    loc, scale, _ = masked_stats(values, observed, layout.sample_id > 0, layout.sample_id, cfg.min_scale)
    normed = standardise(values, observed, loc, scale, cfg.missing_values).to(param.dtype)
    positions = observed_time_ids(observed, layout.sample_id) if cfg.time_ids == "observed" else None
    return _Decoder(model, normed, layout, use_cache, positions, extra_tokens), loc, scale


def _sample_paths(
    model: "MoiraiMoEModel", arrays: Sequence[np.ndarray], horizon_patches: int, num_samples: int,
    options: DecodeOptions, per_step: int,
) -> Tensor:
    """[B, S, horizon_patches·P] sample paths on the original scale, on the model's device; each step emits
    `per_step` patches of the head `options.head` names."""
    decode = options.decode
    if decode == "uni2ts":
        return uni2ts_paths(model, arrays, horizon_patches, num_samples)
    param = next(model.parameters())
    num_steps = math.ceil(horizon_patches / per_step)
    decoder, loc, scale = prepare_decoder(model, arrays, options.use_kv_cache, (num_steps - 1) * per_step)
    hidden = decoder.prefill()
    if decode == "sample":  # the S paths of every series decode as one batch of B·S rows
        hidden = hidden.repeat_interleave(num_samples, 0)
        decoder.expand(num_samples)
    emitted = per_step * model.config.patch_size  # Q: the leading values of the head's K·P that a step uses
    paths = torch.empty(len(arrays) * num_samples, num_steps * emitted, dtype=param.dtype, device=param.device)
    with row_streams(_series_streams(param.device, num_samples if decode == "sample" else 1)):
        _decode_steps(model, decoder, hidden, paths, num_steps, num_samples, emitted, per_step, options)
    paths = paths[:, :horizon_patches * model.config.patch_size].float()  # [B·S, H']
    b = len(arrays)
    paths = paths.view(b, num_samples, -1)
    loc_b = loc[:, -1, 0].float().view(b, 1, 1)
    scale_b = scale[:, -1, 0].float().view(b, 1, 1)
    return loc_b + scale_b * paths  # on the model's device: the harness copies the whole forecast out once


def _series_streams(device: torch.device, per_series: int) -> RowStreams | None:
    """One generator per series of the batch, seeded as the harness says (`batch_seeds`), when it asks for
    per-series streams; None (the global generator) otherwise."""
    seeds = batch_seeds()
    if seeds is None:
        return None
    return RowStreams([torch.Generator(device=device).manual_seed(s) for s in seeds], per_series)


def _decode_steps(model: "MoiraiMoEModel", decoder: "_Decoder", hidden: Tensor, paths: Tensor, num_steps: int,
                  num_samples: int, emitted: int, per_step: int, options: DecodeOptions) -> None:
    """The step loop of `_sample_paths`: draws written into `paths` [B·S, steps·Q] in place."""
    decode, feedback_noise, dtype = options.decode, options.noise, paths.dtype
    head, _ = model.decoding_head(options.head)
    for step in range(num_steps):
        distr = head.distribution(hidden)  # batch shape [B(·S), K·P]
        emitted_bq = paths[:, step * emitted:(step + 1) * emitted]  # [B·S, Q], written in place
        if decode == "sample":
            draws_bq, centers_bq = (t[..., :emitted].to(dtype) for t in distr.sample_with_centers())
            emitted_bq.copy_(draws_bq)
            fed_bq = draws_bq if feedback_noise == 1.0 else centers_bq + feedback_noise * (draws_bq - centers_bq)
        else:
            num_draws = max(num_samples, MEDIAN_DRAWS) if decode == "median" else num_samples
            draws_sbq = distr.sample((num_draws,))[..., :emitted].to(dtype)
            emitted_bq.copy_(draws_sbq[:num_samples].transpose(0, 1).reshape(-1, emitted))
            fed_bq = (draws_sbq.median(dim=0).values if decode == "median"
                      else distr.mean[..., :emitted].to(dtype))
        if step + 1 < num_steps:
            hidden = decoder.step(fed_bq.unflatten(-1, (per_step, -1)))


