"""Forecast files from the command line: a .tsf or a CSV in, a long-format CSV of forecasts out.

    moe-ts forecast --checkpoint RUN/final --input data.csv --horizon 48 --out forecasts.csv
    moe-ts forecast --checkpoint RUN/final --input file.tsf --out forecasts.csv      # the file's @horizon

CSV input: a date column (default `date`) and one numeric column per series (the LSF layout).
Output: one row per series × step with item_id, step, timestamp (when the series has a start and a
frequency), mean and the quantiles q0.1 .. q0.9.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import re

import pandas as pd

from data_prep.series import Series
from moe_ts.forecast_output import DEFAULT_QUANTILES, ForecastOutput


def read_input(path: Path, date_column: str) -> tuple[list[Series], int | None]:
    """Series of a .tsf or CSV file, and the horizon the file names (.tsf @horizon) if any."""
    if path.suffix == ".tsf":
        from data_prep.readers.tsf import read_tsf

        tsf = read_tsf(path)
        return tsf.series, tsf.horizon
    if path.suffix == ".csv":
        from data_prep.readers.lsf_csv import read_lsf_csv

        return read_lsf_csv(path, date_column=date_column), None
    raise ValueError(f"{path}: unsupported input type {path.suffix!r} (use .tsf or .csv)")


def forecast_frame(series: list[Series], out: ForecastOutput, horizon: int) -> pd.DataFrame:
    """Long-format table of the forecasts."""
    rows = []
    for i, s in enumerate(series):
        timestamps: list[pd.Timestamp | None] = [None] * horizon
        if s.start is not None and s.freq:
            index = pd.date_range(s.start, periods=len(s.target) + horizon, freq=s.freq)
            timestamps = list(index[len(s.target):])
        for h in range(horizon):
            row = {"item_id": s.item_id, "step": h + 1, "timestamp": timestamps[h], "mean": float(out.mean[i, h])}
            for q, level in enumerate(out.quantile_levels):
                row[f"q{level:g}"] = float(out.quantiles[i, q, h])
            rows.append(row)
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="moe-ts forecast", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a folder written by save_pretrained, or a Hub repo id")
    parser.add_argument("--input", required=True, type=Path, help=".tsf or .csv (date column + one column per series)")
    parser.add_argument("--out", required=True, type=Path, help="CSV to write")
    parser.add_argument("--horizon", type=int, help="steps to forecast (default: the .tsf file's @horizon)")
    parser.add_argument("--num-samples", type=int, default=100)
    parser.add_argument("--context-length", type=int, help="most recent points used (default: what the model fits)")
    parser.add_argument("--date-column", default="date")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    series, file_horizon = read_input(args.input, args.date_column)
    horizon = args.horizon if args.horizon is not None else file_horizon
    if horizon is None:
        parser.error(f"{args.input} names no horizon: pass --horizon")
    if horizon <= 0:
        parser.error(f"--horizon must be > 0, got {horizon}")
    if not series:
        parser.error(f"{args.input}: no series")

    from moe_ts.model import MoiraiMoEModel

    model = MoiraiMoEModel.from_pretrained(args.checkpoint)
    try:
        out = model.forecast([s.target for s in series], horizon, num_samples=args.num_samples, seed=args.seed,
                             context_length=args.context_length, quantile_levels=DEFAULT_QUANTILES)
    except ValueError as err:  # name the series by its id, not its index
        named = re.sub(r"series (\d+)", lambda m: f"series {series[int(m.group(1))].item_id!r}", str(err))
        raise SystemExit(f"{args.input}: {named}") from None
    frame = forecast_frame(series, out, horizon)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out, index=False)
    print(f"wrote {len(series)} series x {horizon} steps to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
