"""Forecasting with and training of a Time-LLM model (docs/ARCHITECTURE.md §10): direct multi-step point forecasts.

A model has one head per trained horizon; a request for H points uses the shortest head of at least H and keeps
its first H points. A horizon past the longest head is one line: a direct forecaster has no rollout of its own.
Contexts: the last `context_length` points; a shorter one is an error unless `allow_short_context` (then left-padded
with missing values), and one shorter than a patch is always an error (no patch of it is observed).
The training objective is Time-LLM's: MSE on the data's scale, here the mean over the heads, missing targets left out.

Shape legend: B series, L context length, H horizon.
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import torch
from torch import Tensor, nn

from moe_ts.decode_options import accepted as accepted_decoding
from moe_ts.forecast_harness import check_request, context_arrays, forecast_batches
from moe_ts.forecast_output import DEFAULT_QUANTILES, ForecastOutput
from moe_ts.packing import prepare_contexts


def head_for(horizons: tuple[int, ...], prediction_length: int) -> int:
    """The trained horizon whose head serves `prediction_length` (ValueError past the longest)."""
    for h in horizons:
        if h >= prediction_length:
            return h
    raise ValueError(f"prediction_length {prediction_length}: this Time-LLM model's heads were trained for "
                     f"horizons {', '.join(map(str, horizons))}; a direct forecaster cannot forecast past "
                     f"{horizons[-1]} (finetune it with a longer --horizons)")


def context_window(arrays: list[np.ndarray], trained: int, patch_len: int, context_length: int | None,
                   allow_short_context: bool) -> np.ndarray:
    """[B, trained] the last `context_length` (default `trained`) points of each series, left-padded with NaN."""
    used = trained if context_length is None else context_length
    if not patch_len <= used <= trained:
        raise ValueError(f"context_length must be in {patch_len}..{trained} (one patch to the trained context), "
                         f"got {context_length}")
    for i, arr in enumerate(arrays):
        if len(arr) < patch_len:
            raise ValueError(f"series {i}: context has {len(arr)} points, shorter than one patch ({patch_len})")
    window = np.full((len(arrays), trained), np.nan, dtype=np.float32)
    for i, arr in enumerate(prepare_contexts(arrays, used, used, allow_short_context, "the model's context")):
        window[i, trained - len(arr):] = arr
    return window


def time_llm_forecast(model: nn.Module, contexts: object, prediction_length: int,
                      quantile_levels: Iterable[float] = DEFAULT_QUANTILES, seed: int | None = None,
                      batch_size: int = 64, context_length: int | None = None, allow_short_context: bool = False,
                      progress: bool = False, **decoding: Any) -> ForecastOutput:
    """`ForecastOutput.from_point` of `prediction_length` steps (every quantile equals the point; no samples).

    decoding: the MoE model's `DecodeOptions` keywords, checked and not used (nothing is sampled)."""
    accepted_decoding("TimeLLMModel.forecast", decoding)
    check_request(prediction_length, batch_size=batch_size)
    cfg = model.config
    head = head_for(cfg.horizons, prediction_length)
    window = context_window(context_arrays(contexts), cfg.context_length, cfg.patch_len, context_length,
                            allow_short_context)
    device = next(model.parameters()).device

    def predict(rows: np.ndarray) -> Tensor:
        return model(torch.from_numpy(np.asarray(rows)).to(device), horizons=(head,))[head].float()

    return forecast_batches(model, window, predict, prediction_length, quantile_levels, seed=seed,
                            batch_size=batch_size, progress=progress)


def masked_mse(pred_bh: Tensor, target_bh: Tensor) -> Tensor:
    """MSE over the observed (non-NaN) targets; 0 when none is observed (missing values score nothing, as the
    other methods' objectives)."""
    observed = ~torch.isnan(target_bh)
    err = torch.where(observed, pred_bh - torch.nan_to_num(target_bh), torch.zeros_like(pred_bh))
    return (err ** 2).sum() / observed.sum().clamp(min=1)


def time_llm_loss(model: nn.Module, windows_bl: Tensor) -> Tensor:
    """Mean over the heads of the MSE of each head's forecast of the (observed) points after the context."""
    length = model.config.context_length
    windows_bl = windows_bl.to(next(model.parameters()).device)
    preds = model(windows_bl[:, :length])
    losses = [masked_mse(pred_bh, windows_bl[:, length:length + h]) for h, pred_bh in preds.items()]
    return torch.stack(losses).mean()
