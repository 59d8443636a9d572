"""`moe-ts forecast`'s input and output kept whole, and its options (issue 25, deliverables 4 and 6): the --out
suffix picks the format, empty ids refused, .csv.gz in, --quantiles / --decode, progress, --version, one-line
usage errors, `predict_df` with explicit keywords, the CLI's column names and wide frames."""
from __future__ import annotations

import gzip
import inspect
import io
import sys

import numpy as np
import pandas as pd
import pytest

from cli.main import main
from moe_ts.forecast_harness import independent_series
from moe_ts.io.dataframe import predict_df
from moe_ts.model import MoiraiMoEModel

DATES = pd.date_range("2024-01-01", periods=60, freq="h")
FRAME = pd.DataFrame({"item_id": np.repeat(["a", "b"], 30), "timestamp": DATES[:30].append(DATES[:30]),
                      "target": np.r_[np.sin(np.arange(30) / 3), np.arange(30.0)]})


def run(ckpt, tmp_path, *extra, frame=FRAME, name="in.csv", out="out.csv"):
    path = tmp_path / name
    if name.endswith(".gz"):
        with gzip.open(path, "wt") as f:
            frame.to_csv(f, index=False)
    else:
        frame.to_csv(path, index=False)
    return main(["forecast", "--checkpoint", str(ckpt), "--input", str(path), "--horizon", "4", "--num-samples", "8",
                 "--seed", "1", "--out", str(tmp_path / out), "--overwrite", *extra])


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_the_out_suffix_picks_the_format_or_is_an_error(tiny_checkpoint, tmp_path, capsys):
    assert run(tiny_checkpoint, tmp_path, out="f.csv") == 0
    reference = pd.read_csv(tmp_path / "f.csv")
    assert run(tiny_checkpoint, tmp_path, out="f.parquet") == 0
    parquet = pd.read_parquet(tmp_path / "f.parquet")
    assert run(tiny_checkpoint, tmp_path, out="f.csv.gz") == 0
    with gzip.open(tmp_path / "f.csv.gz", "rt") as f:
        gz = pd.read_csv(f)
    for other in (parquet.assign(timestamp=parquet["timestamp"].astype(str)), gz):
        pd.testing.assert_frame_equal(other, reference, check_dtype=False)
    assert run(tiny_checkpoint, tmp_path, out="f.txt") != 0
    err = one_line_error(capsys)
    assert "f.txt" in err and ".parquet" in err and not (tmp_path / "f.txt").exists()


def test_rows_with_an_empty_item_id_are_refused_naming_the_line(tiny_checkpoint, tmp_path, capsys):
    frame = FRAME.copy()
    frame.loc[40, "item_id"] = ""
    assert run(tiny_checkpoint, tmp_path, frame=frame) != 0
    err = one_line_error(capsys)
    assert "line 42" in err and "empty series id" in err and "in.csv" in err


def test_a_gzip_compressed_csv_reads_as_the_plain_one(tiny_checkpoint, tmp_path):
    assert run(tiny_checkpoint, tmp_path, out="plain.csv") == 0
    assert run(tiny_checkpoint, tmp_path, name="in.csv.gz", out="gz.csv") == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "gz.csv"), pd.read_csv(tmp_path / "plain.csv"))


def test_quantiles_decode_and_num_samples_options(tiny_checkpoint, tmp_path, capsys):
    assert run(tiny_checkpoint, tmp_path, "--quantiles", "0.9,0.05,0.5") == 0
    out = pd.read_csv(tmp_path / "out.csv")
    assert list(out.columns) == ["item_id", "step", "timestamp", "mean", "q0.05", "q0.5", "q0.9"]
    assert np.all(np.diff(out[["q0.05", "q0.5", "q0.9"]].to_numpy(), axis=1) >= 0)
    model = MoiraiMoEModel.from_pretrained(tiny_checkpoint)
    series = [FRAME["target"][:30].to_numpy(), FRAME["target"][30:].to_numpy()]
    for mode in ("median", "mean"):
        assert run(tiny_checkpoint, tmp_path, "--decode", mode, "--num-samples", "5") == 0
        with independent_series():  # the CLI's default
            reference = model.forecast(series, 4, num_samples=5, seed=1, decode=mode, allow_short_context=True)
        np.testing.assert_allclose(pd.read_csv(tmp_path / "out.csv")["mean"], reference.mean.ravel(), rtol=1e-5)
    assert run(tiny_checkpoint, tmp_path, "--quantiles", "0.5,1.5") != 0
    assert "--quantiles" in one_line_error(capsys)


def test_a_series_forecast_does_not_depend_on_the_other_series_or_the_batch_size(tiny_checkpoint, tmp_path):
    c = FRAME.query("item_id == 'a'").assign(item_id="c", target=lambda f: f["target"] * 3 - 1)
    frames = {"ab": FRAME, "ba": pd.concat([FRAME.query("item_id == 'b'"), FRAME.query("item_id == 'a'")]),
              "a": FRAME.query("item_id == 'a'"), "cab": pd.concat([c, FRAME])}
    forecasts = []
    for name, frame in frames.items():
        for batch_size in ("1", "2", "64"):
            assert run(tiny_checkpoint, tmp_path, "--batch-size", batch_size, frame=frame, out=f"{name}.csv") == 0
            out = pd.read_csv(tmp_path / f"{name}.csv")
            forecasts.append(out.query("item_id == 'a'").drop(columns="item_id").reset_index(drop=True))
    for other in forecasts[1:]:
        pd.testing.assert_frame_equal(other, forecasts[0])
    assert run(tiny_checkpoint, tmp_path, "--no-independent-series", frame=frames["cab"]) == 0  # batched draws
    batched = pd.read_csv(tmp_path / "out.csv").query("item_id == 'a'").drop(columns="item_id")
    assert not np.allclose(batched["mean"], forecasts[0]["mean"])


def test_version_and_usage_errors_are_one_line(capsys):
    from importlib.metadata import version

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"moe-ts {version('moe-ts')}"
    assert main(["forecast", "--input", "x.csv"]) == 2
    err = one_line_error(capsys)
    assert "--checkpoint" in err and "moe-ts forecast --help" in err and "usage:" not in err
    assert main(["forecast", "--checkpoint", "c", "--input", "x.csv", "--out", "y.csv", "--decode", "greedy"]) == 2
    assert "invalid choice: 'greedy'" in one_line_error(capsys)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_long_horizon_shows_its_decoding_steps_on_a_terminal(tiny_checkpoint, monkeypatch):
    model = MoiraiMoEModel.from_pretrained(tiny_checkpoint)
    patch, per_step = model.config.patch_size, model.config.predict_patches
    horizon = 20 * patch * per_step  # 20 forward passes: the prefill predicts the first patches
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    model.forecast([np.sin(np.arange(64) / 4)], horizon, num_samples=2, seed=0, progress=True)
    shown = terminal.getvalue()
    assert "forecast" in shown and "20/20" in shown and "step" in shown
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal: nothing shown
    model.forecast([np.sin(np.arange(64) / 4)], horizon, num_samples=2, seed=0, progress=True)
    assert sys.stderr.getvalue() == ""


def test_predict_df_has_explicit_keywords_the_cli_columns_and_wide_frames(tiny_checkpoint):
    parameters = inspect.signature(predict_df).parameters.values()
    assert not [p for p in parameters if p.kind is inspect.Parameter.VAR_KEYWORD]
    model = MoiraiMoEModel.from_pretrained(tiny_checkpoint)
    with pytest.raises(TypeError, match="num_sample"):
        predict_df(model, FRAME, 4, num_sample=8)  # a misspelt option is an error, not silently ignored
    long = predict_df(model, FRAME, 4, num_samples=8, seed=3)
    assert list(long.columns) == ["item_id", "timestamp", "mean"] + [f"q{q / 10:g}" for q in range(1, 10)]
    wide = FRAME.pivot(index="timestamp", columns="item_id", values="target")  # DatetimeIndex, one column a series
    wide.columns.name = None
    from_wide = predict_df(model, wide, 4, num_samples=8, seed=3)
    pd.testing.assert_frame_equal(from_wide, long)
    from_date_column = predict_df(model, wide.reset_index(names="date"), 4, num_samples=8, seed=3)
    pd.testing.assert_frame_equal(from_date_column, long)


def test_the_model_method_takes_the_same_explicit_keywords_as_predict_df():
    from moe_ts.model import MoiraiMoEModel

    function = inspect.signature(predict_df).parameters
    method = inspect.signature(MoiraiMoEModel.predict_df).parameters
    assert not any(p.kind is p.VAR_KEYWORD for p in method.values())
    assert {k: v.default for k, v in method.items() if v.kind is v.KEYWORD_ONLY} == \
        {k: v.default for k, v in function.items() if v.kind is v.KEYWORD_ONLY}


def test_head_decodes_with_the_long_horizon_head_or_is_one_line(make_checkpoint, tiny_checkpoint, tmp_path, capsys):
    """`--head horizon` forecasts with a model's long-horizon head (the same as `forecast(..., head="horizon")`);
    a model without one, or `--head` with `--group`, is one line."""
    long = make_checkpoint(tmp_path / "long", seed=0, horizon_patches=2)
    assert run(long, tmp_path, "--head", "horizon", "--no-independent-series", out="h.csv") == 0
    assert run(long, tmp_path, "--head", "next", "--no-independent-series", out="n.csv") == 0
    by_head, by_next = pd.read_csv(tmp_path / "h.csv"), pd.read_csv(tmp_path / "n.csv")
    model = MoiraiMoEModel.from_pretrained(long)
    series = [FRAME["target"].to_numpy()[:30], FRAME["target"].to_numpy()[30:]]
    expected = model.forecast(series, 4, num_samples=8, seed=1, head="horizon", allow_short_context=True)
    np.testing.assert_allclose(by_head["mean"].to_numpy(), expected.mean.reshape(-1), rtol=1e-5, atol=1e-6)
    assert not np.allclose(by_head["mean"].to_numpy(), by_next["mean"].to_numpy())
    assert run(tiny_checkpoint, tmp_path, "--head", "horizon") != 0
    assert "long-horizon head" in one_line_error(capsys)
    assert run(long, tmp_path, "--head", "horizon", "--group") != 0
    assert "--head applies to a MoE model's plain forecasts" in one_line_error(capsys)
