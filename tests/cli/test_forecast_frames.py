"""`moe-ts forecast` and `predict_df` for pandas users: whole timestamp columns validated, long / wide / Parquet
input, forecasts continuing each series' own calendar."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cli.main import main
from moe_ts.model import MoiraiMoEModel


@pytest.fixture(scope="module")
def ckpt(tiny_checkpoint):
    return tiny_checkpoint  # the tiny model's folder (conftest.py), shared and read-only


def forecast(ckpt, tmp_path, frame, *extra, name="in.csv"):
    path = tmp_path / name
    if name.endswith(".parquet"):
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    code = main(["forecast", "--checkpoint", str(ckpt), "--input", str(path), "--horizon", "3", "--num-samples", "4",
                 "--out", str(tmp_path / "out.csv"), "--overwrite", *extra])
    return code, (pd.read_csv(tmp_path / "out.csv") if code == 0 else None)


def hourly(n):
    return pd.date_range("2024-01-01", periods=n, freq="h")


def wide(stamps):
    return pd.DataFrame({"date": stamps.strftime("%Y-%m-%d %H:%M:%S"), "a": np.sin(np.arange(len(stamps)) / 5)})


def test_a_late_gap_is_missing_values_and_forecasts_continue_after_the_last_timestamp(ckpt, tmp_path):
    stamps = hourly(1200).delete(range(1010, 1106))  # four days missing after row 1000
    code, out = forecast(ckpt, tmp_path, wide(stamps))
    assert code == 0
    assert list(out["timestamp"]) == [str(stamps[-1] + pd.Timedelta(hours=h)) for h in (1, 2, 3)]


def test_a_late_duplicate_is_an_error_naming_its_line(ckpt, tmp_path, capsys):
    stamps = hourly(1200)
    stamps = stamps.insert(1050, stamps[1049])  # row 1051 (line 1052) repeats row 1050
    code, _ = forecast(ckpt, tmp_path, wide(stamps))
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1
    assert "line 1052" in err and "repeats the previous timestamp" in err and "in.csv" in err


def test_a_late_reversed_block_and_descending_dates_are_errors(ckpt, tmp_path, capsys):
    stamps = hourly(1200)
    order = list(range(1100)) + list(range(1109, 1099, -1)) + list(range(1110, 1200))
    code, _ = forecast(ckpt, tmp_path, wide(stamps[order]))
    err = capsys.readouterr().err
    assert code != 0 and "line 1103" in err and "earlier than the previous one" in err
    code, _ = forecast(ckpt, tmp_path, wide(hourly(50)[::-1]))
    err = capsys.readouterr().err
    assert code != 0 and "line 3" in err and "earlier than the previous one" in err and "-1h" not in err


def test_an_off_calendar_timestamp_is_an_error_and_freq_overrides_inference(ckpt, tmp_path, capsys):
    stamps = hourly(40)
    odd = stamps.insert(20, stamps[19] + pd.Timedelta(minutes=30))
    code, _ = forecast(ckpt, tmp_path, wide(odd))
    err = capsys.readouterr().err
    assert code != 0 and "line 22" in err and "not on the 'h' calendar" in err
    # every other hour missing at both ends: nothing to infer from, --freq says it
    sparse = stamps[[0, 2, 4, 6, 7, 8, 9, 10, 12, 14, 16, 17, 19, 21, 23, 25, 27, 29, 31, 33]]
    assert forecast(ckpt, tmp_path, wide(sparse))[0] != 0
    capsys.readouterr()
    code, out = forecast(ckpt, tmp_path, wide(sparse), "--freq", "h")
    assert code == 0 and out["timestamp"][0] == str(stamps[34])


def test_long_csv_and_parquet_round_trip_with_each_series_calendar(ckpt, tmp_path):
    a = pd.DataFrame({"item_id": "A", "timestamp": pd.date_range("2023-01-01", periods=30, freq="MS"),
                      "target": np.arange(30.0)})
    b = pd.DataFrame({"item_id": "B", "timestamp": pd.date_range("2024-03-01", periods=12, freq="MS"),
                      "target": np.arange(12.0) * 2})
    frame = pd.concat([a, b.drop(index=[4, 5])])  # B misses two months
    for name in ("long.csv", "long.parquet"):
        code, out = forecast(ckpt, tmp_path, frame, name=name)
        assert code == 0
        assert list(out["item_id"]) == ["A"] * 3 + ["B"] * 3
        assert list(out["timestamp"]) == ["2025-07-01", "2025-08-01", "2025-09-01",
                                          "2025-03-01", "2025-04-01", "2025-05-01"]
        assert list(out["step"]) == [1, 2, 3] * 2
    renamed = frame.rename(columns={"item_id": "sku", "timestamp": "when", "target": "sales"})
    code, out = forecast(ckpt, tmp_path, renamed, "--id-column", "sku", "--timestamp-column", "when",
                         "--target-column", "sales")
    assert code == 0 and set(out["item_id"]) == {"A", "B"}


def test_predict_df_gives_the_frame_users_know(ckpt):
    model = MoiraiMoEModel.from_pretrained(ckpt)
    frame = pd.DataFrame({"item_id": ["x"] * 20 + ["y"] * 5,
                          "timestamp": list(pd.date_range("2024-01-01", periods=20, freq="D"))
                          + list(pd.date_range("2024-02-01", periods=5, freq="D")),
                          "target": np.r_[np.arange(20.0), np.ones(5)]})
    out = model.predict_df(frame, prediction_length=4, num_samples=8, seed=0)
    one_row = pd.concat([frame, pd.DataFrame({"item_id": ["z"], "timestamp": [pd.Timestamp("2024-03-01")],
                                              "target": [3.0]})])
    z = model.predict_df(one_row, prediction_length=2, num_samples=8).query("item_id == 'z'")
    assert list(z["timestamp"]) == [pd.Timestamp("2024-03-02"), pd.Timestamp("2024-03-03")]  # the others' "D"
    assert list(out.columns) == ["item_id", "timestamp", "mean"] + [f"q{q:g}" for q in np.arange(1, 10) / 10]
    assert list(out["timestamp"][:4]) == list(pd.date_range("2024-01-21", periods=4, freq="D"))
    assert list(out["timestamp"][4:]) == list(pd.date_range("2024-02-06", periods=4, freq="D"))  # y: 5 points, padded
    assert np.all(np.diff(out[[f"q{q:g}" for q in np.arange(1, 10) / 10]].to_numpy(), axis=1) >= 0)
    array = model.forecast([frame["target"][:20].to_numpy()], 4, num_samples=8, seed=0)  # arrays still work
    assert array.mean.shape == (1, 4)
