"""The forecast harness every model family's `forecast` runs in (docs/ARCHITECTURE.md §2, "Forecasting").

A family's `forecast` checks its own arguments (`check_request` for the shared ones), turns the contexts into
arrays (`context_arrays`) and hands `forecast_batches` a per-batch callable. The harness puts the model in
eval mode (its training mode restored after), forks the global RNG and seeds the fork (`seeded_eval`: the
caller's RNG is left as it was), runs the series in order in batches of `batch_size` (so draws are consumed
in batch order: the same seed, batch size and series order give the same samples) and builds one
`ForecastOutput`. How a family decodes is its own: `moe_ts.forecasting` (with its `DecodeOptions`),
`moe_ts.msft.forecasting`, `moe_ts.student.model`.

Shape legend: B series, S sample paths, H horizon.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from moe_ts.forecast_output import ForecastOutput
from moe_ts.packing import as_context_arrays

# One batch of series → [B, S, H'] sample paths or [B, H'] point forecasts (H' >= H, cut to the horizon).
PredictBatch = Callable[[Sequence[np.ndarray]], Tensor]


def check_request(prediction_length: int, num_samples: int | None = None, batch_size: int = 1) -> None:
    """ValueError unless the horizon, the number of sample paths (None: a point forecaster, which draws
    none) and the batch size are positive."""
    if prediction_length <= 0:
        raise ValueError(f"prediction_length must be > 0, got {prediction_length}")
    if num_samples is not None and num_samples <= 0:
        raise ValueError(f"num_samples must be > 0, got {num_samples}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def context_arrays(contexts: object) -> list[np.ndarray]:
    """The contexts as float32 1-D arrays (`moe_ts.packing.as_context_arrays`); at least one series."""
    arrays = as_context_arrays(contexts)
    if not arrays:
        raise ValueError("no context series given")
    return arrays


@contextmanager
def seeded_eval(model: nn.Module, seed: int | None) -> Iterator[None]:
    """Run the block with `model` in eval mode and the global RNG forked (seeded with `seed` unless None);
    the model's training mode and the caller's RNG state are restored after."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        if seed is not None:
            torch.manual_seed(seed)
        try:
            yield
        finally:
            model.train(was_training)


def _batch_starts(num_series: int, batch_size: int, progress: bool) -> Iterable[int]:
    """The first series of each batch, with a progress bar on a terminal when `progress`."""
    starts: Iterable[int] = range(0, num_series, batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="forecast", unit="batch", disable=None)
    return starts


def forecast_batches(
    model: nn.Module,
    series: Sequence[np.ndarray] | np.ndarray,
    predict_batch: PredictBatch,
    prediction_length: int,
    quantile_levels: Iterable[float],
    seed: int | None = None,
    batch_size: int = 64,
    progress: bool = False,
) -> ForecastOutput:
    """`predict_batch` over `series` in batches (in `seeded_eval`), cut to `prediction_length`.

    series: the prepared contexts, one item per series (a list of arrays, or the rows of a 2-D array).
    Sample paths [B, S, H] give `ForecastOutput.from_samples`, point forecasts [B, H] `from_point`.
    """
    levels = tuple(float(q) for q in quantile_levels)
    with seeded_eval(model, seed):
        chunks = [predict_batch(series[start:start + batch_size])
                  for start in _batch_starts(len(series), batch_size, progress)]
    forecasts = torch.cat(chunks, dim=0)[..., :prediction_length].float().cpu().numpy()
    if forecasts.ndim == 3:
        return ForecastOutput.from_samples(forecasts, levels)
    return ForecastOutput.from_point(forecasts, levels)
