"""Our MASE / MSIS / CRPS / sMAPE against independent implementations: GluonTS' Evaluator (a test-only
dependency) on random forecasts, and the MASE/MSIS scale of one real series (M4 Hourly H1) computed here
from the raw CSV with plain Python."""
from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eval.metrics import CRPS_QUANTILES, MetricAccumulator, seasonal_scale
from eval.protocols import TaskOptions, build_tasks
from eval.runner import EVAL_QUANTILES, SNAIVE, EvalConfig, evaluate_task, reference_forecasters

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data" if (REPO / "data" / "m4").is_dir() else Path("/work/shared/data")


def _random_case(seed: int, n: int = 7, m: int = 12, h: int = 10, with_nan: bool = False):
    """Histories of different lengths, truths [n, h] and crossing-free quantile forecasts [n, 11, h]."""
    rng = np.random.default_rng(seed)
    hist, truth = [], []
    for i in range(n):
        t = np.arange(40 + 9 * i + h)
        z = 50 + 10 * np.sin(2 * np.pi * t / m) + rng.normal(0, 3, len(t)) + 0.2 * t
        if with_nan:
            z[rng.choice(len(z) - h, 3, replace=False)] = np.nan
            z[len(z) - h + 2] = np.nan  # a missing truth point
        hist.append(z[:-h])
        truth.append(z[-h:])
    y = np.stack(truth)
    base = np.where(np.isnan(y), 50.0, y) + rng.normal(0, 4, y.shape)
    q = np.sort(base[:, None, :] + rng.normal(0, 3, (n, len(EVAL_QUANTILES), h)), axis=1)
    mean = base + rng.normal(0, 1, y.shape)
    return hist, y, q, mean


@pytest.mark.parametrize("with_nan", [False, True])
def test_metrics_match_gluonts_evaluator(with_nan):
    pytest.importorskip("gluonts", reason="gluonts is in the test extra (pip install -e '.[test]')")
    from gluonts.evaluation import Evaluator
    from gluonts.model.forecast import QuantileForecast

    m, h = 12, 10
    hist, y, q, mean = _random_case(1 + int(with_nan), m=m, h=h, with_nan=with_nan)
    acc = MetricAccumulator(EVAL_QUANTILES, with_scaled=True)
    median = q[:, EVAL_QUANTILES.index(0.5)]
    acc.update(y, median, mean, q, np.array([seasonal_scale(z, m) for z in hist]))
    ours = acc.result()

    tss, fcs = [], []
    for i, z in enumerate(hist):
        full = np.concatenate([z, y[i]])
        idx = pd.period_range("2000-01-01", periods=len(full), freq="h")
        tss.append(pd.DataFrame(full, index=idx))
        keys = [str(lv) for lv in EVAL_QUANTILES] + ["mean"]
        arrays = np.concatenate([q[i], mean[i][None]], axis=0)
        fcs.append(QuantileForecast(arrays, start_date=idx[len(z)], forecast_keys=keys, item_id=str(i)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        agg, _ = Evaluator(quantiles=CRPS_QUANTILES, seasonality=m, num_workers=0)(iter(tss), iter(fcs), num_series=len(tss))
    assert ours["MASE"].value == pytest.approx(agg["MASE"], rel=1e-9)
    assert ours["MSIS"].value == pytest.approx(agg["MSIS"], rel=1e-9)
    assert ours["CRPS"].value == pytest.approx(agg["mean_wQuantileLoss"], rel=1e-9)
    if not with_nan:  # equal observed counts per item: GluonTS' mean of per-item means equals our pooled mean
        assert ours["MSE"].value == pytest.approx(agg["MSE"], rel=1e-9)
        assert ours["sMAPE"].value == pytest.approx(agg["sMAPE"], rel=1e-9)
        assert ours["MAE"].value == pytest.approx(agg["abs_error"] / y.size, rel=1e-9)


def _m4_row(path: Path, item: str) -> list[float]:
    with open(path) as fh:
        for row in csv.reader(fh):
            if row[0] == item:
                return [float(x) for x in row[1:] if x != ""]
    raise AssertionError(f"{item} not in {path}")


def test_m4_hourly_h1_scale_and_seasonal_naive_mase_pinned():
    if not (DATA / "m4" / "Hourly-train.csv").exists():
        pytest.skip("data/m4/Hourly-train.csv not present")
    z = _m4_row(DATA / "m4" / "Hourly-train.csv", "H1")
    y = _m4_row(DATA / "m4" / "Hourly-test.csv", "H1")
    assert (len(z), len(y)) == (700, 48)
    # by hand: mean |z[t] - z[t-24]| over the 700 training hours; Seasonal Naive repeats the last 24 hours
    scale = sum(abs(z[t] - z[t - 24]) for t in range(24, len(z))) / (len(z) - 24)
    snaive_mae = sum(abs(a - b) for a, b in zip(y, z[-24:] * 2)) / 48
    assert scale == pytest.approx(42.37130177514793, rel=1e-12)  # the same sum, printed once from the CSV
    assert snaive_mae / scale == pytest.approx(0.8270141628553805, rel=1e-12)

    task = build_tasks("m4_hourly", "monash", DATA, TaskOptions(max_series=1))[0]
    assert task.item_ids[0] == "H1" and task.seasonality == 24 and task.horizon == 48
    assert task.scales(np.arange(1))[0] == pytest.approx(scale, rel=1e-12)
    res = evaluate_task(task, {k: v for k, v in reference_forecasters(None).items() if k == SNAIVE},  # type: ignore[arg-type]
                        EvalConfig(plot_series=0))
    m = res.metrics[SNAIVE]
    assert m["MASE"].value == pytest.approx(snaive_mae / scale, rel=1e-9)
    # a point forecast's 95% interval has width 0: interval score = 2/alpha * |y - f| = 40 |y - f|
    assert m["MSIS"].value == pytest.approx(40.0 * snaive_mae / scale, rel=1e-9)
