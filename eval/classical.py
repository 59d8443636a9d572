"""Classical statistical baselines (AutoETS, AutoTheta, AutoARIMA from `statsforecast`) with the model's
`forecast` interface, run by the zero-shot runner on exactly the model's instances (same contexts, horizons
and windows as Seasonal Naive and Naive).

- `season_length` is the dataset's seasonality (the runner re-binds every baseline with `for_seasonality`).
- Point forecast = the model's mean; quantiles come from statsforecast's Gaussian prediction intervals:
  level q < 0.5 is the lower bound of the central (1 - 2q) interval, q > 0.5 the upper bound of the (2q - 1)
  interval and q = 0.5 the mean. So CRPS (quantile form) and MSIS are defined for them; CRPS_samples is not.
- statsforecast does not take missing values: a context's leading NaNs are dropped and each inner NaN takes
  the (filled) value one season earlier, or, within the first season, a linear interpolation (`fill_missing`).
- A series where the seasonal statsforecast fit raises (e.g. too short for its season) is refitted without
  seasonality; one where that raises too gets the Seasonal Naive forecast. `nonseasonal` and `fallbacks`
  count such series, and the runner writes the counts into the task's sampling column.
"""
from __future__ import annotations

import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from eval.baselines import SeasonalNaive
from moe_ts.forecast_output import DEFAULT_QUANTILES, ForecastOutput

CLASSICAL: tuple[str, ...] = ("autoets", "autotheta", "autoarima")


def fill_missing(context: np.ndarray, season_length: int = 1) -> np.ndarray:
    """Drop leading NaNs, then fill each missing point with the (filled) value one season earlier where there is
    one, else by linear interpolation between observed neighbours (constant after the last observed value).

    Season 1 is plain linear interpolation. With a season, a gap of whole periods repeats the last season
    instead of drawing a straight line that would hide the seasonality from the model selection.
    """
    x = np.asarray(context, dtype=np.float64)
    obs = np.flatnonzero(~np.isnan(x))
    if obs.size == 0:
        raise ValueError(f"context of {len(x)} points has no observed value")
    x = x[obs[0]:]
    obs = obs - obs[0]
    if obs.size == len(x):
        return x
    linear = np.interp(np.arange(len(x)), obs, x[obs])
    if season_length <= 1:
        return linear
    out = x.copy()
    for t in np.flatnonzero(np.isnan(x)):
        out[t] = out[t - season_length] if t >= season_length else linear[t]
    return out


def interval_levels(quantile_levels: tuple[float, ...]) -> list[int | float]:
    """The central interval levels (percent) statsforecast must return for these quantile levels."""
    out = set()
    for q in quantile_levels:
        if abs(q - 0.5) > 1e-9:
            lvl = round(abs(1.0 - 2.0 * q) * 100.0, 6)
            out.add(int(lvl) if float(lvl).is_integer() else lvl)
    return sorted(out)


def _key(level: float) -> str:
    return str(int(level)) if float(level).is_integer() else str(level)


def _make_model(name: str, season_length: int) -> Any:
    from statsforecast.models import AutoARIMA, AutoETS, AutoTheta

    cls = {"autoets": AutoETS, "autotheta": AutoTheta, "autoarima": AutoARIMA}[name]
    return cls(season_length=season_length)


def _quantile_rows(name: str, m: int, y: np.ndarray, h: int, levels: tuple[float, ...]) -> np.ndarray:
    """[Q + 1, H]: the mean then one row per quantile level (raises where statsforecast fails)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = _make_model(name, m).forecast(y=y, h=h, level=interval_levels(levels))
    mean = np.asarray(out["mean"], np.float64)
    rows = [mean]
    for q in levels:
        if abs(q - 0.5) <= 1e-9:
            rows.append(mean)
            continue
        lvl = round(abs(1.0 - 2.0 * q) * 100.0, 6)
        rows.append(np.asarray(out[f"{'lo' if q < 0.5 else 'hi'}-{_key(lvl)}"], np.float64))
    res = np.stack(rows)
    if res.shape != (len(levels) + 1, h) or not np.all(np.isfinite(res)):
        raise ValueError(f"{name}: forecast of shape {res.shape} or not finite")
    return res


FIT_OK, FIT_NONSEASONAL, FIT_SNAIVE = 0, 1, 2


def _fit_one(args: tuple[str, int, np.ndarray, int, tuple[float, ...]]) -> tuple[np.ndarray, int]:
    """The rows of `_quantile_rows` and how they were obtained: the model with season m, the model without
    seasonality (where the seasonal fit raised, e.g. a context shorter than two seasons), or Seasonal Naive."""
    name, m, y, h, levels = args
    for season, status in ((m, FIT_OK), (1, FIT_NONSEASONAL)):
        if status == FIT_NONSEASONAL and m == 1:
            break
        try:
            return _quantile_rows(name, season, y, h, levels), status
        except Exception:  # statsforecast raises many types on degenerate series; the fallback is counted
            continue
    point = SeasonalNaive(m).forecast([y], h).mean[0]
    return np.repeat(point[None], len(levels) + 1, axis=0), FIT_SNAIVE


class StatsForecastBaseline:
    """One statsforecast model (by name) fitted independently on every context."""

    def __init__(self, name: str, season_length: int = 1, n_jobs: int = 1) -> None:
        if name not in CLASSICAL:
            raise ValueError(f"unknown classical baseline {name!r} (choose from {', '.join(CLASSICAL)})")
        if season_length < 1:
            raise ValueError(f"season_length must be >= 1, got {season_length}")
        self.name = name
        self.season_length = season_length
        self.n_jobs = n_jobs
        self.fitted = 0
        self.nonseasonal = 0  # series refitted without seasonality
        self.fallbacks = 0  # series forecast by Seasonal Naive

    def for_seasonality(self, season_length: int) -> "StatsForecastBaseline":
        """The same baseline for a dataset with this seasonality (the runner calls this per dataset)."""
        return StatsForecastBaseline(self.name, season_length, self.n_jobs)

    def forecast(
        self,
        contexts: list[np.ndarray],
        prediction_length: int,
        quantile_levels: tuple[float, ...] = DEFAULT_QUANTILES,
        **_: Any,
    ) -> ForecastOutput:
        """Mean [B, H] and quantiles [B, Q, H]; extra keyword arguments of the model's interface are ignored."""
        if prediction_length <= 0:
            raise ValueError(f"prediction_length must be > 0, got {prediction_length}")
        levels = tuple(float(q) for q in quantile_levels)
        jobs = []
        for i, ctx in enumerate(contexts):
            try:
                y = fill_missing(ctx, self.season_length)
            except ValueError as err:
                raise ValueError(f"{self.name} forecast, series {i}: {err}") from None
            jobs.append((self.name, self.season_length, y, prediction_length, levels))
        if self.n_jobs > 1 and len(jobs) > 1:
            with ProcessPoolExecutor(max_workers=min(self.n_jobs, os.cpu_count() or 1)) as pool:
                results = list(pool.map(_fit_one, jobs, chunksize=max(1, len(jobs) // (4 * self.n_jobs))))
        else:
            results = [_fit_one(j) for j in jobs]
        arr = np.stack([r for r, _ in results])  # [B, Q + 1, H]
        self.fitted += len(results)
        self.nonseasonal += sum(1 for _, st in results if st == FIT_NONSEASONAL)
        self.fallbacks += sum(1 for _, st in results if st == FIT_SNAIVE)
        return ForecastOutput(mean=arr[:, 0], quantiles=arr[:, 1:], quantile_levels=levels, samples=None)
