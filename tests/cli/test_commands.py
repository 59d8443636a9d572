"""The `moe-ts` command: dispatch, forecast files, clear errors."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cli.main import main


@pytest.fixture(scope="module")
def ckpt(tiny_checkpoint):
    return tiny_checkpoint  # the tiny model's folder (conftest.py, 8-point patches), shared and read-only


def test_usage_and_unknown_command(capsys):
    assert main([]) == 0
    assert "pretrain" in capsys.readouterr().out
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_forecast_csv(ckpt, tmp_path):
    dates = pd.date_range("2024-01-01", periods=60, freq="h")
    frame = pd.DataFrame({"date": dates.strftime("%Y-%m-%d %H:%M:%S"), "a": np.sin(np.arange(60) / 3), "b": np.arange(60.0)})
    frame.to_csv(tmp_path / "in.csv", index=False)
    assert main(["forecast", "--checkpoint", str(ckpt), "--input", str(tmp_path / "in.csv"), "--horizon", "5",
                 "--num-samples", "20", "--out", str(tmp_path / "out.csv")]) == 0
    out = pd.read_csv(tmp_path / "out.csv")
    assert len(out) == 10 and set(out["item_id"]) == {"a", "b"}
    assert list(out.columns[:4]) == ["item_id", "step", "timestamp", "mean"] and "q0.5" in out.columns
    assert out.loc[0, "timestamp"] == "2024-01-03 12:00:00"  # the step after the last date
    qs = out[[c for c in out.columns if c.startswith("q")]].to_numpy()
    assert np.all(np.diff(qs, axis=1) >= 0)


def test_forecast_refuses_to_replace_an_existing_file_without_overwrite(ckpt, tmp_path, capsys):
    frame = pd.DataFrame({"date": pd.date_range("2024-01-01", periods=40, freq="h").strftime("%Y-%m-%d %H:%M"),
                          "a": np.arange(40.0)})
    frame.to_csv(tmp_path / "in.csv", index=False)
    users = tmp_path / "out.csv"
    users.write_text("the user's own file\n")
    args = ["forecast", "--checkpoint", str(ckpt), "--input", str(tmp_path / "in.csv"), "--horizon", "3",
            "--num-samples", "5", "--out", str(users)]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "exists already" in err and len(err.strip().splitlines()) == 1
    assert users.read_text() == "the user's own file\n"
    assert main(args + ["--overwrite"]) == 0
    assert len(pd.read_csv(users)) == 3 and not list(tmp_path.glob(".*partial"))


def test_forecast_tsf_uses_its_horizon_and_pads_short_series_with_a_note(ckpt, tmp_path, capsys):
    tsf = tmp_path / "in.tsf"
    tsf.write_text("@relation t\n@attribute series_name string\n@frequency yearly\n@horizon 3\n"
                   "@missing false\n@equallength false\n@data\n"
                   "S1:" + ",".join(str(float(i)) for i in range(30)) + "\nS2:1.0,2.0,3.0\n")
    assert main(["forecast", "--checkpoint", str(ckpt), "--input", str(tsf), "--out", str(tmp_path / "o.csv")]) == 0
    assert "1 series shorter than one patch (8 points) are left-padded" in capsys.readouterr().err
    out = pd.read_csv(tmp_path / "o.csv")
    assert len(out) == 6 and list(out["item_id"]) == ["S1"] * 3 + ["S2"] * 3
