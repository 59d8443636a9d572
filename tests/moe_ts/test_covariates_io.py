"""Covariates by column name (issue 27): `predict_df` and `moe-ts forecast --past-covariates/--known-covariates`."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from cli.main import main
from moe_ts.config import ModelConfig, MoEConfig
from moe_ts.forecast_harness import independent_series
from moe_ts.io.dataframe import TimeSeriesFrameError
from moe_ts.model import MoiraiMoEModel

P, H = 8, 16
T = 50


@pytest.fixture(scope="module")
def model() -> MoiraiMoEModel:
    torch.manual_seed(0)
    cfg = ModelConfig(patch_size=P, max_seq_len=48, d_model=32, num_layers=2, num_heads=4, variate_bias=True,
                      moe=MoEConfig(num_experts=4, top_k=2, d_ff=24))
    model = MoiraiMoEModel(cfg).eval()
    with torch.no_grad():
        for layer in model.layers:
            layer.attn.var_bias.weight.normal_(0, 1.0)
    return model


def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    """A long frame of two items (target, price: past-only, temp: known) and the future frame of the next H steps."""
    rng = np.random.default_rng(1)
    rows, future = [], []
    for item, n in (("a", T), ("b", T - 5)):
        stamps = pd.date_range("2024-01-01", periods=n + H, freq="h")
        temp = np.sin(np.arange(n + H) / 4.0) * 5 + (1 if item == "a" else -1)
        price = rng.normal(0, 1, n + H)
        target = 2 * temp[:n] + rng.normal(0, 0.3, n)
        rows.append(pd.DataFrame({"item_id": item, "timestamp": stamps[:n], "target": target,
                                  "price": price[:n], "temp": temp[:n]}))
        future.append(pd.DataFrame({"item_id": item, "timestamp": stamps[n:], "price": price[n:],
                                    "temp": temp[n:]}))
    return pd.concat(rows, ignore_index=True), pd.concat(future, ignore_index=True)


def test_predict_df_hands_each_item_its_own_covariates(model):
    df, future = frames()
    out = model.predict_df(df, H, num_samples=4, seed=0, past_covariates=["price"], known_covariates=["temp"],
                           future_df=future)
    assert list(out["item_id"].unique()) == ["a", "b"] and len(out) == 2 * H
    # reference: the arrays cut from the frames by hand, through forecast()
    values = {i: df[df.item_id == i] for i in ("a", "b")}
    fut = {i: future[future.item_id == i] for i in ("a", "b")}
    with independent_series():  # predict_df's default: each series its own random stream
        ref = model.forecast([values[i]["target"].to_numpy() for i in "ab"], H, num_samples=4, seed=0,
                             past_covariates={"price": [values[i]["price"].to_numpy() for i in "ab"]},
                             known_covariates={"temp": [np.r_[values[i]["temp"], fut[i]["temp"]] for i in "ab"]})
    np.testing.assert_allclose(out["mean"].to_numpy(), ref.mean.reshape(-1), rtol=1e-6, atol=1e-6)


def test_predict_df_past_covariates_future_values_do_not_reach_the_forecast(model):
    """Perturbation test: the future frame's values of a past-only covariate are never read; a known one's are."""
    df, future = frames()
    kwargs = dict(num_samples=4, seed=0, past_covariates=["price"], known_covariates=["temp"])
    base = model.predict_df(df, H, future_df=future, **kwargs)
    perturbed = future.assign(price=future["price"] * 100 + 7)
    same = model.predict_df(df, H, future_df=perturbed, **kwargs)
    np.testing.assert_array_equal(base["mean"].to_numpy(), same["mean"].to_numpy())
    warmer = future.assign(temp=future["temp"][::-1].to_numpy())
    moved = model.predict_df(df, H, future_df=warmer, **kwargs)
    assert np.abs(base["mean"].to_numpy() - moved["mean"].to_numpy()).max() > 1e-4


def test_a_known_covariate_without_horizon_values_is_refused_naming_it(model):
    df, future = frames()
    with pytest.raises(TimeSeriesFrameError, match=r"^known covariate 'temp': no values for the horizon") as err:
        model.predict_df(df, H, past_covariates=["price"], known_covariates=["temp"])
    assert "\n" not in str(err.value)
    with pytest.raises(TimeSeriesFrameError, match=r"known covariate 'temp': series 'b' has 10 future values, "
                                                   r"needs 16"):
        model.predict_df(df, H, known_covariates=["temp"], future_df=future.drop(index=future.index[-6:]))
    with pytest.raises(TimeSeriesFrameError, match="no column 'rain'"):
        model.predict_df(df, H, past_covariates=["rain"])


def test_wide_covariate_columns_are_shared_and_not_forecast(model):
    df, future = frames()
    a = df[df.item_id == "a"]
    wide = pd.DataFrame({"date": a["timestamp"], "x": a["target"], "y": a["target"][::-1].to_numpy(),
                         "temp": a["temp"]})
    fut = future[future.item_id == "a"].rename(columns={"timestamp": "date"})[["date", "temp"]]
    out = model.predict_df(wide, H, num_samples=3, seed=0, known_covariates=["temp"], future_df=fut)
    assert list(out["item_id"].unique()) == ["x", "y"]
    with independent_series():
        ref = model.forecast([wide["x"].to_numpy()], H, num_samples=3, seed=0,
                             known_covariates={"temp": np.r_[wide["temp"], fut["temp"]]})
    np.testing.assert_allclose(out["mean"].to_numpy()[:H], ref.mean[0], rtol=1e-6, atol=1e-6)


def test_cli_forecasts_with_covariate_columns(model, tmp_path, capsys):
    df, future = frames()
    model.save_pretrained(tmp_path / "model")
    df.to_csv(tmp_path / "in.csv", index=False)
    future.to_csv(tmp_path / "future.csv", index=False)
    args = ["forecast", "--checkpoint", str(tmp_path / "model"), "--input", str(tmp_path / "in.csv"), "--horizon",
            str(H), "--num-samples", "4", "--seed", "0", "--out", str(tmp_path / "f.csv"), "--past-covariates",
            "price", "--known-covariates", "temp"]
    assert main(args) != 0
    assert "error: known covariate 'temp': no values for the horizon" in capsys.readouterr().err
    assert main(args + ["--future-input", str(tmp_path / "future.csv")]) == 0
    written = pd.read_csv(tmp_path / "f.csv")
    expected = model.predict_df(df, H, num_samples=4, seed=0, past_covariates=["price"], known_covariates=["temp"],
                                future_df=future)
    np.testing.assert_allclose(written["mean"].to_numpy(), expected["mean"].to_numpy(), rtol=1e-5, atol=1e-5)
