"""statsforecast baselines: interface, quantiles from intervals, missing values, fallbacks, CLI selection."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eval.classical import StatsForecastBaseline, fill_missing, interval_levels
from eval.run import main
from eval.runner import EVAL_QUANTILES, MODEL, NAIVE, SNAIVE, parse_baselines

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data" if (REPO / "data" / "expsmooth").is_dir() else Path("/work/shared/data")


def _seasonal(n: int, m: int = 12, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return 20.0 + 0.05 * t + 4.0 * np.sin(2 * np.pi * t / m) + rng.normal(0, 0.5, n)


def test_fill_missing_drops_leading_and_interpolates_inner_nans():
    x = np.array([np.nan, np.nan, 1.0, np.nan, 3.0, 4.0, np.nan])
    np.testing.assert_allclose(fill_missing(x), [1.0, 2.0, 3.0, 4.0, 4.0])
    with pytest.raises(ValueError, match="no observed value"):
        fill_missing(np.array([np.nan, np.nan]))


def test_fill_missing_with_a_season_repeats_the_previous_season():
    x = np.array([np.nan, 1.0, 2.0, 3.0, 1.5, np.nan, np.nan, 3.5, np.nan, np.nan, np.nan, 3.0])
    # after the leading NaN: [1, 2, 3, 1.5, _, _, 3.5, _, _, _, 3]; season 3: t=4 <- t=1 (2.0), t=5 <- t=2 (3.0),
    # t=7 <- t=4 (filled 2.0), t=8 <- t=5 (filled 3.0), t=9 <- t=6 (3.5)
    np.testing.assert_allclose(fill_missing(x, 3), [1, 2, 3, 1.5, 2, 3, 3.5, 2, 3, 3.5, 3.0])
    # a NaN inside the first season has no season before it: linear interpolation
    np.testing.assert_allclose(fill_missing(np.array([1.0, np.nan, 3.0, 4.0]), 3), [1, 2, 3, 4])


def test_interval_levels_cover_the_eval_quantiles():
    assert interval_levels(EVAL_QUANTILES) == [20, 40, 60, 80, 95]


@pytest.mark.parametrize("name", ["autoets", "autotheta"])
def test_mean_and_quantiles_match_statsforecast_dataframe_api(name):
    from statsforecast import StatsForecast
    from statsforecast.models import AutoETS, AutoTheta

    ys = [_seasonal(120, seed=1), _seasonal(90, seed=2)]
    out = StatsForecastBaseline(name, season_length=12).forecast([y.astype(np.float32) for y in ys], 10, EVAL_QUANTILES)
    assert out.mean.shape == (2, 10) and out.quantiles.shape == (2, len(EVAL_QUANTILES), 10)
    assert np.all(np.diff(out.quantiles, axis=1) >= -1e-9), "quantiles must not cross"
    np.testing.assert_allclose(out.median, out.mean)
    # independent path: statsforecast's own DataFrame interface on the same (float32-rounded) series
    df = pd.concat([pd.DataFrame({"unique_id": str(i), "ds": np.arange(len(y)), "y": y.astype(np.float32).astype(np.float64)})
                    for i, y in enumerate(ys)])
    model = (AutoETS if name == "autoets" else AutoTheta)(season_length=12)
    fc = StatsForecast(models=[model], freq=1, n_jobs=1).forecast(df=df, h=10, level=[80, 95])
    col = "AutoETS" if name == "autoets" else "AutoTheta"
    for i in range(2):
        rows = fc[fc["unique_id"] == str(i)]
        np.testing.assert_allclose(out.mean[i], rows[col].to_numpy(), rtol=1e-6)
        np.testing.assert_allclose(out.quantiles[i, EVAL_QUANTILES.index(0.1)], rows[f"{col}-lo-80"].to_numpy(), rtol=1e-6)
        np.testing.assert_allclose(out.quantiles[i, -1], rows[f"{col}-hi-95"].to_numpy(), rtol=1e-6)


def test_too_short_series_falls_back_and_is_counted():
    b = StatsForecastBaseline("autoets", season_length=12)
    out = b.forecast([_seasonal(100), np.array([np.nan, 5.0, 6.0], np.float32)], 4, EVAL_QUANTILES)
    assert b.fitted == 2 and b.fallbacks + b.nonseasonal >= 1
    if b.fallbacks:
        np.testing.assert_allclose(out.mean[1], 6.0)  # Seasonal Naive on 2 points: the last value
    assert np.all(np.isfinite(out.quantiles))


def test_parse_baselines_names_unknown_and_always_keeps_seasonal_naive():
    assert parse_baselines("naive,autoets") == (SNAIVE, NAIVE, "autoets")
    assert parse_baselines("theta, snaive") == (SNAIVE, "autotheta")
    with pytest.raises(ValueError, match="unknown baseline 'prophet'"):
        parse_baselines("snaive,prophet")


def test_cli_runs_classical_baselines_on_the_model_instances(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    (d / "expsmooth").symlink_to(DATA / "expsmooth")
    out = tmp_path / "out"
    rc = main(["--checkpoint", "naive", "--suite", "monash", "--datasets", "hospital", "--data-dir", str(d),
               "--max-series", "5", "--baselines", "snaive,autoets,autotheta", "--plot-series", "0", "--out", str(out)])
    assert rc == 0
    with open(out / "results.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r["status"] == "ok"]
    assert {r["role"] for r in rows} == {MODEL, SNAIVE, "autoets", "autotheta"}
    inst = {(r["role"], r["num_instances"]) for r in rows}
    assert {n for _, n in inst} == {"5"}
    metrics = {(r["role"], r["metric"]) for r in rows}
    for role in ("autoets", "autotheta"):
        assert {(role, m) for m in ("MAE", "MASE", "CRPS", "MSIS")} <= metrics
        assert (role, "CRPS_samples") not in metrics
    with open(out / "aggregate.csv") as fh:
        assert {r["role"] for r in csv.DictReader(fh)} == {MODEL, "autoets", "autotheta"}
    text = (out / "results.md").read_text()
    assert "AutoETS / Seasonal Naive" in text and "MAE AutoTheta" in text


def test_cli_rejects_an_unknown_baseline(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--checkpoint", "naive", "--suite", "monash", "--baselines", "snaive,foo", "--out", str(tmp_path)])
    assert "unknown baseline 'foo'" in capsys.readouterr().err


@pytest.mark.dist  # a pool of 2 worker processes
def test_two_processes_give_the_same_forecasts_and_counts():
    ys = [_seasonal(60 + 7 * i, seed=i) for i in range(5)] + [np.array([1.0, 2.0])]
    one = StatsForecastBaseline("autotheta", 12, n_jobs=1)
    two = StatsForecastBaseline("autotheta", 12, n_jobs=2)
    a, b = one.forecast(ys, 6, EVAL_QUANTILES), two.forecast(ys, 6, EVAL_QUANTILES)
    np.testing.assert_array_equal(a.quantiles, b.quantiles)
    assert (one.fallbacks, one.nonseasonal, one.fitted) == (two.fallbacks, two.nonseasonal, two.fitted)
