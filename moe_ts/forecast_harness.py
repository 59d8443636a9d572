"""The forecast harness every model family's `forecast` runs in (docs/ARCHITECTURE.md §2, "Forecasting").

A family's `forecast` checks its own arguments (`check_request` for the shared ones), turns the contexts into
arrays (`context_arrays`) and hands `forecast_batches` a per-batch callable. The harness puts the model in eval
mode (its training mode restored after), forks the global RNG and seeds the fork (`seeded_eval`: the caller's RNG
is left as it was), runs the series in order in batches of `batch_size` (so draws are consumed in batch order: the
same seed, batch size and series order give the same samples) and builds one `ForecastOutput`. Inside
`independent_series()` each series has its own random stream instead (`series_seed`): its forecast is the same
whatever the other series and the batch size. How a family decodes is its own: `moe_ts.forecasting` (with its
`DecodeOptions`), `moe_ts.msft.forecasting`, `moe_ts.student.model`.

Shape legend: B series, S sample paths, H horizon.
"""
from __future__ import annotations

import hashlib
import sys
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from moe_ts.forecast_output import ForecastOutput
from moe_ts.packing import as_context_arrays

# One batch of series → [B, S, H'] sample paths or [B, H'] point forecasts (H' >= H, cut to the horizon).
PredictBatch = Callable[[Sequence[np.ndarray]], Tensor]


_INDEPENDENT: ContextVar[bool] = ContextVar("moe_ts_independent_series", default=False)
_BATCH_SEEDS: ContextVar[list[int] | None] = ContextVar("moe_ts_batch_seeds", default=None)


def batch_seeds() -> list[int] | None:
    """The `series_seed` of each series of the batch being decoded, when the harness asks the family to draw
    each series from its own generator (`forecast_batches(..., row_streams=True)`); None otherwise."""
    return _BATCH_SEEDS.get()


@contextmanager
def independent_series(enabled: bool = True) -> Iterator[None]:
    """Within the block, a seeded `forecast` (any family) draws each series from its own random stream, seeded
    by `series_seed` from the seed and the series' values: a series' forecast is the same whatever the other
    series and the batch size. A family whose decode loop draws from per-series generators (`batch_seeds`;
    moe_ts.forecasting's sample, median and mean decoding) keeps its batches; the others decode the series one
    at a time (3.9x the batched time for 32 series of configs/small.yaml on one CPU thread, BENCHMARKS.md)."""
    token = _INDEPENDENT.set(enabled)
    try:
        yield
    finally:
        _INDEPENDENT.reset(token)


def series_seed(seed: int, context: np.ndarray) -> int:
    """The seed of one series' random stream: a hash of `seed` and the series' values (NaN canonical)."""
    values = np.asarray(context, dtype=np.float32)
    values = np.where(np.isnan(values), np.float32(np.nan), values)
    digest = hashlib.blake2b(values.tobytes(), digest_size=8, key=str(int(seed)).encode()).digest()
    return int.from_bytes(digest, "little") >> 1


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


class _Progress:
    """A progress bar over decoding steps (each forward pass of the model), on stderr when it is a terminal.

    The total is known after the first batch (every batch decodes the same horizon); a family that does not
    call the model's forward per step counts one step per batch."""

    def __init__(self, model: nn.Module, num_batches: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(desc="forecast", unit="step", disable=None, file=sys.stderr)
        self.num_batches = num_batches
        self.calls = 0
        self.hook = model.register_forward_hook(self._forward)

    def _forward(self, *_: object) -> None:
        self.calls += 1
        self.bar.update(1)

    def batch_done(self, first: bool) -> None:
        if self.calls == 0:
            self.bar.update(1)
            self.calls = 1
        if first:
            self.bar.total = self.calls * self.num_batches
            self.bar.refresh()
        self.calls = 0

    def close(self) -> None:
        self.hook.remove()
        self.bar.close()


def forecast_batches(
    model: nn.Module,
    series: Sequence[np.ndarray] | np.ndarray,
    predict_batch: PredictBatch,
    prediction_length: int,
    quantile_levels: Iterable[float],
    seed: int | None = None,
    batch_size: int = 64,
    progress: bool = False,
    row_streams: bool = False,
) -> ForecastOutput:
    """`predict_batch` over `series` in batches (in `seeded_eval`), cut to `prediction_length`.

    series: the prepared contexts, one item per series (a list of arrays, or the rows of a 2-D array).
    Inside `independent_series()` a seeded forecast draws each series from its own random stream: in batches
    when `row_streams` (`predict_batch` honours `batch_seeds()`), else one series at a time.
    Sample paths [B, S, H] give `ForecastOutput.from_samples`, point forecasts [B, H] `from_point`.
    progress: a bar over the decoding steps on stderr when it is a terminal.
    """
    levels = tuple(float(q) for q in quantile_levels)
    independent = seed is not None and _INDEPENDENT.get()
    size = 1 if independent and not row_streams else batch_size
    starts = range(0, len(series), size)
    bar = _Progress(model, len(starts)) if progress else None
    chunks = []
    try:
        with seeded_eval(model, seed):
            for index, start in enumerate(starts):
                chunk = series[start:start + size]
                if independent and row_streams:
                    token = _BATCH_SEEDS.set([series_seed(seed, one) for one in chunk])
                    try:
                        chunks.append(predict_batch(chunk))
                    finally:
                        _BATCH_SEEDS.reset(token)
                else:
                    if independent:
                        torch.manual_seed(series_seed(seed, chunk[0]))
                    chunks.append(predict_batch(chunk))
                if bar is not None:
                    bar.batch_done(first=index == 0)
    finally:
        if bar is not None:
            bar.close()
    forecasts = torch.cat(chunks, dim=0)[..., :prediction_length].float().cpu().numpy()
    if forecasts.ndim == 3:
        return ForecastOutput.from_samples(forecasts, levels)
    return ForecastOutput.from_point(forecasts, levels)
