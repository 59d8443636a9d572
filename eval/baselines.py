"""Naive and Seasonal Naive forecasters with the model's `forecast` interface (docs/ARCHITECTURE.md §6).

Both are point forecasters: every quantile equals the point (`ForecastOutput.from_point`).
Missing values (NaN) in a context are handled by using the last *observed* value (Naive) or, per
seasonal position, the latest observed value at that seasonal position (Seasonal Naive, falling back
to the last observed value overall where that position is never observed). A context with no
observed value at all cannot be forecast and raises.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from moe_ts.forecast_output import DEFAULT_QUANTILES, ForecastOutput


def _check_request(contexts: list[np.ndarray], prediction_length: int) -> None:
    if prediction_length <= 0:
        raise ValueError(f"prediction_length must be > 0, got {prediction_length}")
    if len(contexts) == 0:
        raise ValueError("no contexts to forecast")


def _last_observed(context: np.ndarray, index: int) -> float:
    """The last observed value in context[:index + 1]; raises if there is none."""
    obs = np.flatnonzero(~np.isnan(context[: index + 1]))
    if obs.size == 0:
        raise ValueError(f"context {index}: no observed value to forecast from (all {len(context)} values are NaN)")
    return float(context[obs[-1]])


def _last_season(ctx: np.ndarray, m: int, fallback: float) -> np.ndarray:
    """[m] per seasonal position, the latest observed value at that position (fallback where never observed)."""
    k = len(ctx) // m
    seasons = ctx[len(ctx) - k * m :].reshape(k, m)
    valid = ~np.isnan(seasons)
    row = np.where(valid, np.arange(k)[:, None], -1).max(axis=0)
    picked = seasons[np.maximum(row, 0), np.arange(m)]
    return np.where(row >= 0, picked, fallback)


class SeasonalNaive:
    """Repeat the last observed season: f[t] = z[T - m + (t mod m)]; naive where m = 1 or m >= len(context)."""

    name = "seasonal_naive"

    def __init__(self, season_length: int = 1) -> None:
        if season_length < 1:
            raise ValueError(f"season_length must be >= 1, got {season_length}")
        self.season_length = season_length

    def for_seasonality(self, season_length: int) -> "SeasonalNaive":
        """The same forecaster for a dataset with this seasonality (the runner calls this per dataset)."""
        return SeasonalNaive(season_length)

    def forecast(
        self,
        contexts: list[np.ndarray],
        prediction_length: int,
        quantile_levels: tuple[float, ...] = DEFAULT_QUANTILES,
        **_: Any,
    ) -> ForecastOutput:
        """Point forecast [B, H]; extra keyword arguments of the model's interface are accepted and ignored."""
        _check_request(contexts, prediction_length)
        m = self.season_length
        point = np.empty((len(contexts), prediction_length), dtype=np.float64)
        for i, ctx in enumerate(contexts):
            ctx = np.asarray(ctx, dtype=np.float64)
            if ctx.size == 0:
                raise ValueError(f"context {i} is empty")
            try:
                fallback = _last_observed(ctx, len(ctx) - 1)
            except ValueError as err:
                raise ValueError(f"{self.name.replace('_', ' ')} forecast, series {i}: {err}") from None
            if m == 1 or m > len(ctx):
                point[i] = fallback
                continue
            season = _last_season(ctx, m, fallback)
            reps = -(-prediction_length // m)
            point[i] = np.tile(season, reps)[:prediction_length]
        return ForecastOutput.from_point(point, quantile_levels)


class Naive(SeasonalNaive):
    """Repeat the last observed value of the context: Seasonal Naive with season 1, whatever the dataset's."""

    name = "naive"

    def __init__(self) -> None:
        super().__init__(1)

    def for_seasonality(self, season_length: int) -> "Naive":
        return self


BASELINES: dict[str, type] = {"naive": Naive, "seasonal_naive": SeasonalNaive}
