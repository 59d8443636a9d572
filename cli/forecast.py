"""Forecast files from the command line: a table or a .tsf in, a long-format CSV of forecasts out.

    moe-ts forecast --checkpoint RUN/final --input data.csv --horizon 48 --out forecasts.csv
    moe-ts forecast --checkpoint RUN/final --input long.parquet --horizon 48 --out forecasts.csv [--freq h]
    moe-ts forecast --checkpoint RUN/final --input file.tsf --out forecasts.csv      # the file's @horizon
    moe-ts forecast --checkpoint CONVERTED --input wide.csv --horizon 48 --group --out forecasts.csv  # jointly

Input (.csv or .parquet), in either layout (see moe_ts/io/dataframe.py):
  long  one row per item and timestamp: --id-column (default item_id), --timestamp-column (default timestamp)
        and --target-column (default target); used when the id column is in the file;
  wide  one timestamp column (--timestamp-column, default `date`) and one numeric column per series.
Every series' whole timestamp column is checked: increasing, no duplicate, on one regular calendar (the
frequency is inferred, or given with --freq); absent steps count as missing values; the first offending row
is named. Series shorter than one patch are left-padded with missing values (as `moe-ts eval` does), with a note.
Output: one row per series x step with item_id, step, timestamp (continuing the series' own calendar; empty for
a .tsf without start dates), mean and the quantiles q0.1 .. q0.9.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import pandas as pd

from moe_ts.io.dataframe import TimedSeries, TimeSeriesFrameError, forecast_frame, series_from_long, series_from_wide
from moe_ts.forecast_output import DEFAULT_QUANTILES


def read_table(path: Path) -> pd.DataFrame:
    """A .csv or .parquet file as a DataFrame (CSV cells kept as text, parsed and checked later)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: input file not found")
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as err:
        kind = "Parquet" if path.suffix == ".parquet" else "CSV"
        raise TimeSeriesFrameError(f"{path}: not a {kind} file: {str(err).splitlines()[0]}") from None


def read_input(path: Path, args: argparse.Namespace) -> tuple[list[TimedSeries], int | None]:
    """Series of the input file, and the horizon the file names (.tsf @horizon) if any."""
    if path.suffix == ".tsf":
        from data_prep.readers.tsf import read_tsf

        tsf = read_tsf(path)
        series = [TimedSeries(s.item_id, s.target.astype(float), None if s.start is None else pd.Timestamp(s.start),
                              args.freq or s.freq) for s in tsf.series]
        return series, tsf.horizon
    if path.suffix not in (".csv", ".parquet"):
        raise TimeSeriesFrameError(f"{path}: unsupported input type {path.suffix!r} (use .csv, .parquet or .tsf)")
    frame = read_table(path)
    line = (lambda i: f"line {i + 2}") if path.suffix == ".csv" else (lambda i: f"row {i + 1}")
    if args.id_column in frame.columns:
        timestamp = args.timestamp_column or "timestamp"
        return series_from_long(frame, args.id_column, timestamp, args.target_column, args.freq, str(path), line), None
    if args.id_column != "item_id":  # asked for by name
        raise TimeSeriesFrameError(f"{path}: no column {args.id_column!r} (columns: {', '.join(map(str, frame.columns[:10]))})")
    timestamp = args.timestamp_column or args.date_column or "date"
    return series_from_wide(frame, timestamp, args.freq, str(path), line), None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moe-ts forecast", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a folder written by save_pretrained, or a Hub repo id")
    parser.add_argument("--input", required=True, type=Path, help=".csv or .parquet (long or wide layout), or .tsf")
    parser.add_argument("--out", required=True, type=Path, help="CSV to write (a file; its folder is created)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out when it exists already")
    parser.add_argument("--horizon", type=int, help="steps to forecast (default: the .tsf file's @horizon)")
    parser.add_argument("--freq", help="pandas frequency alias of the timestamps (h, D, W-SUN, MS, 15min, ...); "
                                       "default: inferred from each series' timestamps")
    parser.add_argument("--id-column", default="item_id", help="long layout: the series id column (default item_id)")
    parser.add_argument("--timestamp-column", help="the timestamp column (default: timestamp in the long layout, "
                                                   "date in the wide one)")
    parser.add_argument("--target-column", default="target", help="long layout: the value column (default target)")
    parser.add_argument("--date-column", help=argparse.SUPPRESS)  # the older name of --timestamp-column (wide)
    parser.add_argument("--num-samples", type=int, default=100, help="sample paths per series (default 100)")
    parser.add_argument("--context-length", type=int, help="most recent points used (default: what the model fits)")
    parser.add_argument("--batch-size", type=int, default=64, help="series per forward pass (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument("--group", action="store_true",
                        help="forecast all series of the file jointly as one multivariate group (any-variate, as "
                             "uni2ts; a converted uni2ts model); the series must have equal lengths")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.out.is_dir():
        raise IsADirectoryError(f"{args.out}: is a folder; --out names the CSV file to write")
    if args.out.exists() and not args.overwrite:
        raise FileExistsError(f"{args.out}: exists already; pass --overwrite to replace it")
    series, file_horizon = read_input(args.input, args)
    horizon = args.horizon if args.horizon is not None else file_horizon
    if horizon is None:
        parser.error(f"{args.input} names no horizon: pass --horizon")
    if horizon <= 0:
        parser.error(f"--horizon must be > 0, got {horizon}")
    if not series:
        parser.error(f"{args.input}: no series")

    from moe_ts.io.loading import load_model

    model = load_model(args.checkpoint)  # a MoE model or a distilled MLP student (point forecasts)
    # The MoE model needs one patch; the student reads a fixed window. Shorter series are left-padded.
    patch = getattr(model.config, "patch_size", None) or model.config.context_length
    what = "one patch" if hasattr(model.config, "patch_size") else "the student's context"
    short = [s.item_id for s in series if len(s.values) < patch]
    if short:
        shown = ", ".join(repr(i) for i in short[:5]) + (", ..." if len(short) > 5 else "")
        print(f"note: {len(short)} series shorter than {what} ({patch} points) are left-padded with missing "
              f"values: {shown}", file=sys.stderr)
    try:
        if args.group:
            if not hasattr(model, "forecast_group"):
                raise SystemExit(f"{args.checkpoint}: --group needs a Moirai-MoE model folder")
            out = model.forecast_group([s.values for s in series], horizon, num_samples=args.num_samples,
                                       seed=args.seed, context_length=args.context_length,
                                       quantile_levels=DEFAULT_QUANTILES)
        else:
            out = model.forecast([s.values for s in series], horizon, num_samples=args.num_samples, seed=args.seed,
                                 context_length=args.context_length, quantile_levels=DEFAULT_QUANTILES,
                                 batch_size=args.batch_size, allow_short_context=True,
                                 progress=len(series) > args.batch_size)
    except ValueError as err:  # name the series by its id, not its index
        named = re.sub(r"series (\d+)", lambda m: f"series {series[int(m.group(1))].item_id!r}", str(err))
        raise SystemExit(f"{args.input}: {named}") from None
    frame = forecast_frame(series, out, horizon, quantile_names=lambda q: f"q{q:g}")
    frame.insert(1, "step", [h + 1 for _ in series for h in range(horizon)])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_name(f".{args.out.name}.partial")
    frame.to_csv(partial, index=False)
    os.replace(partial, args.out)  # a killed run never leaves a half-written CSV under the user's name
    print(f"wrote {len(series)} series x {horizon} steps to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
