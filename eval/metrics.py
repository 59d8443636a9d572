"""Forecast accuracy metrics (docs/ARCHITECTURE.md §6), numpy, NaN-aware in the truth.

Shapes: `y` truth [N, H] (NaN = missing, those points are left out of every sum and mean),
`point` a point forecast [N, H], `q_nqh` quantile forecasts [N, Q, H], `samples_nsh` [N, S, H],
`scale` per-instance seasonal scale [N]. N counts test instances (series x windows).

Conventions (GluonTS `gluonts.evaluation.metrics` and the Monash archive's error calculator):
- MASE of one instance = mean |y - f| over its observed horizon points / seasonal scale, where the
  seasonal scale is the mean |z[t] - z[t-m]| over the in-sample history z before the forecast start
  (pairs where either value is missing are left out). m = the dataset's seasonality, or 1 when the
  history is not longer than m (GluonTS `calculate_seasonal_error`).
  A scale that is zero (a constant history) or undefined (no observed pair) makes that instance's
  MASE infinite/undefined: as in the Monash error calculator, such instances are dropped from the
  dataset mean, and the number dropped is returned (`MetricValue.excluded`) so reports can state it.
  If every instance is dropped the value is NaN with that count; `seasonal_scale` itself raises
  only where no scale can be formed at all from the arguments (seasonality < 1).
- MSIS (alpha = 0.05) uses the same per-instance scale and the same exclusion rule.
- sMAPE = 2 * mean |y - f| / (|y| + |f|) (GluonTS, a fraction in [0, 2]); a point where
  y = f = 0 contributes 0 (a perfect forecast), not 0/0.
- CRPS (quantile form) = GluonTS `mean_wQuantileLoss`: for each level q in 0.1..0.9,
  wQL_q = 2 * sum |(f_q - y) * (1{y <= f_q} - q)| / sum |y|, sums over every observed point of the
  dataset; CRPS = mean over q. CRPS from samples = sum over points of the sample CRPS
  E|X - y| - E|X - X'|/2, divided by sum |y| (the same weighting).
- MAE, MSE: mean over every observed point of the dataset (equal-length instances make this the
  mean of per-instance means).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CRPS_QUANTILES: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
MSIS_ALPHA = 0.05


@dataclass(frozen=True)
class MetricValue:
    """A dataset-level metric: its value and how many instances were dropped as undefined."""

    value: float
    excluded: int = 0


def _check_shapes(y: np.ndarray, f: np.ndarray, what: str) -> None:
    if y.shape != f.shape:
        raise ValueError(f"{what}: truth shape {y.shape} != forecast shape {f.shape}")


def _observed(y: np.ndarray) -> np.ndarray:
    return ~np.isnan(y)


def seasonal_scale(history: np.ndarray, seasonality: int) -> float:
    """Mean |z[t] - z[t-m]| over observed pairs of `history`; m falls back to 1 when len <= m.

    Returns 0.0 for a constant history and NaN when no pair is observed (both make MASE undefined).
    """
    if seasonality < 1:
        raise ValueError(f"seasonality must be >= 1, got {seasonality}")
    z = np.asarray(history, dtype=np.float64)
    m = seasonality if seasonality < len(z) else 1
    if len(z) <= m:
        return float("nan")
    diff = np.abs(z[m:] - z[:-m])
    diff = diff[~np.isnan(diff)]
    return float(diff.mean()) if diff.size else float("nan")


def mae(y: np.ndarray, point: np.ndarray) -> float:
    """Mean absolute error over observed points."""
    y, point = np.asarray(y, np.float64), np.asarray(point, np.float64)
    _check_shapes(y, point, "MAE")
    obs = _observed(y)
    return float(np.abs(y - point)[obs].mean()) if obs.any() else float("nan")


def mse(y: np.ndarray, point: np.ndarray) -> float:
    """Mean squared error over observed points."""
    y, point = np.asarray(y, np.float64), np.asarray(point, np.float64)
    _check_shapes(y, point, "MSE")
    obs = _observed(y)
    return float(np.square(y - point)[obs].mean()) if obs.any() else float("nan")


def smape(y: np.ndarray, point: np.ndarray) -> float:
    """2 * mean |y - f| / (|y| + |f|) over observed points; y = f = 0 counts as 0."""
    y, point = np.asarray(y, np.float64), np.asarray(point, np.float64)
    _check_shapes(y, point, "sMAPE")
    obs = _observed(y)
    if not obs.any():
        return float("nan")
    return float(2.0 * _smape_terms(y, point)[obs].mean())


def _smape_terms(y: np.ndarray, point: np.ndarray) -> np.ndarray:
    """|y - f| / (|y| + |f|) per point, 0 where both are 0."""
    num = np.abs(y - point)
    den = np.abs(y) + np.abs(point)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def _per_instance_mean(values_nh: np.ndarray, obs_nh: np.ndarray) -> np.ndarray:
    """Mean over the observed points of each row; NaN for a row with none."""
    count = obs_nh.sum(axis=1)
    total = np.where(obs_nh, values_nh, 0.0).sum(axis=1)
    return np.divide(total, count, out=np.full(len(count), np.nan), where=count > 0)


def _scaled_mean(per_instance: np.ndarray, scale: np.ndarray) -> MetricValue:
    scale = np.asarray(scale, np.float64)
    if scale.shape != per_instance.shape:
        raise ValueError(f"scale shape {scale.shape} != number of instances {per_instance.shape}")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = per_instance / scale
    ok = np.isfinite(ratio)
    excluded = int((~ok).sum())
    return MetricValue(float(ratio[ok].mean()) if ok.any() else float("nan"), excluded)


def mase(y: np.ndarray, point: np.ndarray, scale: np.ndarray) -> MetricValue:
    """Mean over instances of MAE_i / scale_i; instances with an undefined ratio are dropped and counted."""
    y, point = np.asarray(y, np.float64), np.asarray(point, np.float64)
    _check_shapes(y, point, "MASE")
    obs = _observed(y)
    return _scaled_mean(_per_instance_mean(np.abs(y - point), obs), scale)


def msis(y: np.ndarray, lower: np.ndarray, upper: np.ndarray, scale: np.ndarray, alpha: float = MSIS_ALPHA) -> MetricValue:
    """Mean scaled interval score of the (1 - alpha) interval [lower, upper] (Makridakis et al. 2020)."""
    y, lower, upper = (np.asarray(a, np.float64) for a in (y, lower, upper))
    _check_shapes(y, lower, "MSIS lower")
    _check_shapes(y, upper, "MSIS upper")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"MSIS alpha must be in (0, 1), got {alpha}")
    return _scaled_mean(_per_instance_mean(_interval_score(y, lower, upper, alpha), _observed(y)), scale)


def _interval_score(y: np.ndarray, lower: np.ndarray, upper: np.ndarray, alpha: float) -> np.ndarray:
    """Pointwise interval score: width + 2/alpha * distance outside the interval."""
    return (
        (upper - lower)
        + (2.0 / alpha) * (lower - y) * (y < lower)
        + (2.0 / alpha) * (y - upper) * (y > upper)
    )


def quantile_loss_sums(y: np.ndarray, q_nqh: np.ndarray, levels: tuple[float, ...]) -> np.ndarray:
    """[Q] GluonTS quantile loss 2 * sum |(f_q - y) * (1{y <= f_q} - q)| over observed points."""
    y, q_nqh = np.asarray(y, np.float64), np.asarray(q_nqh, np.float64)
    if q_nqh.ndim != 3 or q_nqh.shape[1] != len(levels) or q_nqh.shape[::2] != y.shape:
        raise ValueError(f"quantile forecasts shape {q_nqh.shape} does not match truth {y.shape} and {len(levels)} levels")
    lv = np.asarray(levels, np.float64)[None, :, None]
    d = q_nqh - y[:, None, :]  # NaN where y is missing
    # |(f - y)(1{y <= f} - q)| = (1 - q)(f - y) when f >= y, else q(y - f)
    loss = np.maximum((1.0 - lv) * d, -lv * d)
    return 2.0 * np.nansum(loss, axis=(0, 2))


def abs_target_sum(y: np.ndarray) -> float:
    """sum |y| over observed points."""
    y = np.asarray(y, np.float64)
    return float(np.abs(y[_observed(y)]).sum())


def weighted_quantile_loss(y: np.ndarray, q_nqh: np.ndarray, levels: tuple[float, ...]) -> float:
    """CRPS as GluonTS mean_wQuantileLoss: mean over levels of 2 * sum QL_q / sum |y| (NaN if sum |y| = 0)."""
    denom = abs_target_sum(y)
    if denom == 0.0:
        return float("nan")
    return float((quantile_loss_sums(y, q_nqh, levels) / denom).mean())


def select_levels(q_nqh: np.ndarray, levels: tuple[float, ...], wanted: tuple[float, ...]) -> np.ndarray:
    """[N, len(wanted), H] the quantile rows at `wanted` levels (each must be present, to 1e-9)."""
    idx = []
    for w in wanted:
        hits = [i for i, lv in enumerate(levels) if abs(lv - w) < 1e-9]
        if not hits:
            raise ValueError(f"quantile level {w} is not among the forecast's levels {tuple(levels)}")
        idx.append(hits[0])
    q_nqh = np.asarray(q_nqh)
    if idx == list(range(idx[0], idx[0] + len(idx))):
        return q_nqh[:, idx[0] : idx[0] + len(idx), :]  # a view, no copy
    return q_nqh[:, idx, :]


def crps_samples_pointwise(y: np.ndarray, samples_nsh: np.ndarray) -> np.ndarray:
    """[N, H] sample CRPS E|X - y| - E|X - X'|/2 per point (NaN where y is missing)."""
    y = np.asarray(y, np.float64)
    s = np.sort(np.asarray(samples_nsh, np.float64), axis=1)
    if s.ndim != 3 or (s.shape[0], s.shape[2]) != y.shape:
        raise ValueError(f"samples shape {s.shape} does not match truth {y.shape}")
    n_s = s.shape[1]
    term1 = np.abs(s - y[:, None, :]).mean(axis=1)
    # E|X - X'| over all ordered pairs = (2 / S^2) * sum_i (2i - S - 1) x_(i), i = 1..S
    weights = (2.0 * np.arange(1, n_s + 1) - n_s - 1.0)[None, :, None]
    term2 = (weights * s).sum(axis=1) * 2.0 / (n_s * n_s)
    out = term1 - 0.5 * term2
    out[np.isnan(y)] = np.nan
    return out


def crps_from_samples(y: np.ndarray, samples_nsh: np.ndarray) -> float:
    """Dataset CRPS from samples, weighted like wQuantileLoss: sum of pointwise CRPS / sum |y|."""
    denom = abs_target_sum(y)
    if denom == 0.0:
        return float("nan")
    return float(np.nansum(crps_samples_pointwise(y, samples_nsh)) / denom)


def geometric_mean(values: list[float]) -> float:
    """Geometric mean of positive finite values; raises on anything else (a relative score must exist)."""
    arr = np.asarray(values, np.float64)
    if arr.size == 0:
        raise ValueError("geometric mean of no values")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"geometric mean needs positive finite values, got {arr.tolist()}")
    return float(np.exp(np.log(arr).mean()))


METRIC_NAMES: tuple[str, ...] = ("MAE", "MSE", "MASE", "sMAPE", "CRPS", "MSIS", "CRPS_samples")


class MetricAccumulator:
    """Dataset-level metrics accumulated over chunks of instances (equal to the one-shot functions).

    update() takes the truth y [n, H], the forecast's median and mean [n, H], its quantiles
    q_nqh [n, Q, H] at `levels`, the per-instance seasonal scale [n] (None when MASE/MSIS are not
    wanted) and samples [n, S, H] or None. Point metrics follow GluonTS: MAE, MASE and sMAPE on the
    median, MSE on the mean. CRPS_samples is reported only when every chunk had samples.
    """

    def __init__(self, levels: tuple[float, ...], with_scaled: bool = True, alpha: float = MSIS_ALPHA) -> None:
        self.levels = tuple(levels)
        self.with_scaled = with_scaled
        self.alpha = alpha
        self.count = 0
        self.instances = 0
        self.abs_err = 0.0
        self.sq_err = 0.0
        self.smape_terms = 0.0
        self.abs_y = 0.0
        self.ql = np.zeros(len(CRPS_QUANTILES))
        self.crps_samples = 0.0
        self.all_have_samples = True
        self.mase_i: list[np.ndarray] = []
        self.msis_i: list[np.ndarray] = []
        self.scales: list[np.ndarray] = []

    def update(
        self,
        y: np.ndarray,
        median: np.ndarray,
        mean: np.ndarray,
        q_nqh: np.ndarray,
        scale: np.ndarray | None = None,
        samples_nsh: np.ndarray | None = None,
    ) -> None:
        y, median, mean = (np.asarray(a, np.float64) for a in (y, median, mean))
        _check_shapes(y, median, "median")
        _check_shapes(y, mean, "mean")
        obs = _observed(y)
        self.instances += len(y)
        self.count += int(obs.sum())
        self.abs_err += float(np.abs(y - median)[obs].sum())
        self.sq_err += float(np.square(y - mean)[obs].sum())
        self.smape_terms += float(_smape_terms(y, median)[obs].sum())
        self.abs_y += abs_target_sum(y)
        self.ql += quantile_loss_sums(y, select_levels(q_nqh, self.levels, CRPS_QUANTILES), CRPS_QUANTILES)
        if samples_nsh is None:
            self.all_have_samples = False
        elif self.all_have_samples:
            self.crps_samples += float(np.nansum(crps_samples_pointwise(y, samples_nsh)))
        if self.with_scaled:
            if scale is None:
                raise ValueError("MASE/MSIS need a per-instance seasonal scale")
            bounds = select_levels(q_nqh, self.levels, (self.alpha / 2, 1.0 - self.alpha / 2))
            self.mase_i.append(_per_instance_mean(np.abs(y - median), obs))
            score = _interval_score(y, bounds[:, 0].astype(np.float64), bounds[:, 1].astype(np.float64), self.alpha)
            self.msis_i.append(_per_instance_mean(score, obs))
            self.scales.append(np.asarray(scale, np.float64))

    def result(self) -> dict[str, MetricValue]:
        """The metrics accumulated so far (NaN where undefined)."""
        nan = float("nan")
        out = {
            "MAE": MetricValue(self.abs_err / self.count if self.count else nan),
            "MSE": MetricValue(self.sq_err / self.count if self.count else nan),
            "sMAPE": MetricValue(2.0 * self.smape_terms / self.count if self.count else nan),
            "CRPS": MetricValue(float((self.ql / self.abs_y).mean()) if self.abs_y > 0 else nan),
        }
        if self.all_have_samples and self.instances:
            out["CRPS_samples"] = MetricValue(self.crps_samples / self.abs_y if self.abs_y > 0 else nan)
        if self.with_scaled and self.scales:
            scale = np.concatenate(self.scales)
            out["MASE"] = _scaled_mean(np.concatenate(self.mase_i), scale)
            out["MSIS"] = _scaled_mean(np.concatenate(self.msis_i), scale)
        return out
