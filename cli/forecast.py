"""Forecast files from the command line: a table or a .tsf in, a long-format CSV of forecasts out.

    moe-ts forecast --checkpoint RUN/final --input data.csv --horizon 48 --out forecasts.csv
    moe-ts forecast --checkpoint RUN/final --input long.parquet --horizon 48 --out forecasts.csv [--freq h]
    moe-ts forecast --checkpoint RUN/final --input file.tsf --out forecasts.csv      # the file's @horizon
    moe-ts forecast --checkpoint CONVERTED --input wide.csv --horizon 48 --group --out forecasts.csv  # jointly
    moe-ts forecast --checkpoint RUN/final --input load.csv --horizon 24 --past-covariates price \
        --known-covariates temp_forecast,holiday --future-input future.csv --out forecasts.csv  # covariates

Input (.csv, .csv.gz or .parquet), in either layout (see moe_ts/io/dataframe.py):
  long  one row per item and timestamp: --id-column (default item_id), --timestamp-column (default timestamp)
        and --target-column (default target); used when the id column is in the file;
  wide  one timestamp column (--timestamp-column, default `date`) and one numeric column per series.
Every series' whole timestamp column is checked: increasing, no duplicate, on one regular calendar (the
frequency is inferred, or given with --freq); absent steps count as missing values; the first offending row
is named. Series shorter than one patch are left-padded with missing values (as `moe-ts eval` does), with a note.
Dates: ISO, or d/m/y vs m/d/y as the data show (--dayfirst / --no-dayfirst / --date-format when every date
reads both ways: refused, never guessed), UTC offsets that change at a DST switch, or an integer time index.
Covariates (columns by name): --past-covariates are observed in the context only; --known-covariates are known
for the horizon too, their next --horizon values read from --future-input (the same layout: ids and timestamps of
the future steps). In the long layout each item has its own; in the wide layout they are shared by every other
(target) column. Each series is decoded with its covariates as one any-variate group (moe_ts/group_decoding.py).
Output (.csv, .csv.gz or .parquet, as --out ends): one row per series x step with item_id, step, timestamp
(continuing the series' own calendar; empty for a .tsf without start dates), mean and the quantiles q0.1 .. q0.9
(--quantiles).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from moe_ts.io.dataframe import (TimedSeries, TimeSeriesFrameError, covariate_values, forecast_frame, series_from_long,
                                 series_from_wide)
from moe_ts.decode_options import DECODE_MODES, HEADS
from moe_ts.device import add_device_arguments
from moe_ts.forecast_output import DEFAULT_QUANTILES

PROGRESS_HORIZON = 256  # from this horizon on (or several batches), a progress bar on a terminal


TABLE_SUFFIXES = (".csv", ".csv.gz", ".parquet")  # what --input reads (besides .tsf) and --out writes


def table_suffix(path: Path) -> str | None:
    """".csv", ".csv.gz" or ".parquet" as the file's name ends (any case), else None."""
    name = path.name.lower()
    return next((s for s in sorted(TABLE_SUFFIXES, key=len, reverse=True) if name.endswith(s)), None)


def read_table(path: Path) -> pd.DataFrame:
    """A .csv, .csv.gz or .parquet file as a DataFrame (CSV cells kept as text, parsed and checked later)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: input file not found")
    kind = "Parquet" if table_suffix(path) == ".parquet" else "CSV"
    try:
        if kind == "Parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype=str, keep_default_na=False, compression="infer")
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError, EOFError) as err:
        raise TimeSeriesFrameError(f"{path}: not a {kind} file: {str(err).splitlines()[0]}") from None


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """`frame` as the format `path`'s suffix names, written next to it and renamed into place (a killed run
    never leaves a half-written file under the user's name)."""
    partial = path.with_name(f".{path.name}.partial")
    if table_suffix(path) == ".parquet":
        frame.to_parquet(partial, index=False)
    else:
        frame.to_csv(partial, index=False, compression="gzip" if table_suffix(path) == ".csv.gz" else None)
    os.replace(partial, path)


def covariate_names(args: argparse.Namespace) -> list[str]:
    return [*args.past_covariates, *args.known_covariates]


def read_input(path: Path, args: argparse.Namespace) -> tuple[list[TimedSeries], int | None]:
    """Series of the input file, and the horizon the file names (.tsf @horizon) if any."""
    if path.suffix == ".tsf":
        if covariate_names(args):
            raise TimeSeriesFrameError(f"{path}: a .tsf file holds no covariate columns (use a table)")
        from data_prep.readers.tsf import read_tsf

        tsf = read_tsf(path)
        series = [TimedSeries(s.item_id, s.target.astype(float), None if s.start is None else pd.Timestamp(s.start),
                              args.freq or s.freq) for s in tsf.series]
        return series, tsf.horizon
    if table_suffix(path) is None:
        raise TimeSeriesFrameError(f"{path}: unsupported input type {path.suffix!r} (use .csv, .csv.gz, .parquet "
                                   f"or .tsf)")
    frame = read_table(path)
    line = (lambda i: f"line {i + 2}") if table_suffix(path) != ".parquet" else (lambda i: f"row {i + 1}")
    dates = {"date_format": args.date_format, "dayfirst": args.dayfirst}
    if args.id_column in frame.columns:
        timestamp = args.timestamp_column or "timestamp"
        return series_from_long(frame, args.id_column, timestamp, args.target_column, args.freq, str(path), line,
                                **dates), None
    if args.id_column != "item_id":  # asked for by name
        raise TimeSeriesFrameError(f"{path}: no column {args.id_column!r} (columns: {', '.join(map(str, frame.columns[:10]))})")
    timestamp = args.timestamp_column or args.date_column or "date"
    targets = [c for c in frame.columns if c != timestamp and c not in covariate_names(args)] if covariate_names(
        args) else None
    return series_from_wide(frame, timestamp, args.freq, str(path), line, columns=targets, **dates), None


def read_covariates(args: argparse.Namespace, series: list[TimedSeries], horizon: int) -> dict[str, dict]:
    """The covariates' values per series for `forecast` (`moe_ts.io.dataframe.covariate_values`); {} without."""
    if not covariate_names(args):
        if args.future_input is not None:
            raise ValueError("--future-input holds known covariates' future values: name them with "
                             "--known-covariates")
        return {}
    frame = read_table(args.input)
    long = args.id_column in frame.columns
    timestamp = args.timestamp_column or ("timestamp" if long else args.date_column or "date")
    future = read_table(args.future_input) if args.future_input is not None else None
    common = dict(long=long, horizon=horizon, future_df=future, id_column=args.id_column,
                  timestamp_column=timestamp, freq=args.freq, where=str(args.input), date_format=args.date_format,
                  dayfirst=args.dayfirst)
    return {"past_covariates": covariate_values(frame, series, args.past_covariates, False, **common),
            "known_covariates": covariate_values(frame, series, args.known_covariates, True, **common)}


def quantile_levels(text: str) -> tuple[float, ...]:
    """--quantiles "0.1,0.5,0.9": distinct levels in (0, 1), sorted."""
    try:
        levels = sorted({float(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"not comma-separated numbers: {text!r}") from None
    if not levels or not all(0.0 < q < 1.0 for q in levels):
        raise argparse.ArgumentTypeError(f"levels must be in (0, 1), got {text!r}")
    return tuple(levels)


def column_names(text: str) -> list[str]:
    """--past-covariates "a,b": distinct column names."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"need distinct comma-separated column names, got {text!r}")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moe-ts forecast", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a folder written by save_pretrained, or a Hub repo id")
    parser.add_argument("--input", required=True, type=Path, help=".csv, .csv.gz or .parquet (long or wide layout), "
                                                                  "or .tsf")
    parser.add_argument("--out", required=True, type=Path, help="file to write: .csv, .csv.gz or .parquet (its folder "
                                                                   "is created)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out when it exists already")
    parser.add_argument("--horizon", type=int, help="steps to forecast (default: the .tsf file's @horizon)")
    parser.add_argument("--freq", help="pandas frequency alias of the timestamps (h, D, W-SUN, MS, 15min, ...); "
                                       "default: inferred from each series' timestamps; 'MS+14D' = monthly "
                                       "on the 15th")
    parser.add_argument("--date-format", help="strftime format of the timestamps (e.g. '%%d/%%m/%%Y'); default: "
                                              "read as ISO or d/m/y vs m/d/y as the data show (ambiguous = error)")
    parser.add_argument("--dayfirst", action=argparse.BooleanOptionalAction, default=None,
                        help="read 01/02/2019 as 1 February (--dayfirst) or 2 January (--no-dayfirst); "
                             "needed when every date reads both ways")
    parser.add_argument("--id-column", default="item_id", help="long layout: the series id column (default item_id)")
    parser.add_argument("--timestamp-column", help="the timestamp column (default: timestamp in the long layout, "
                                                   "date in the wide one)")
    parser.add_argument("--target-column", default="target", help="long layout: the value column (default target)")
    parser.add_argument("--date-column", help=argparse.SUPPRESS)  # the older name of --timestamp-column (wide)
    parser.add_argument("--num-samples", type=int, default=100, help="sample paths per series (default 100)")
    parser.add_argument("--quantiles", type=quantile_levels, default=DEFAULT_QUANTILES,
                        help="comma-separated quantile levels in (0, 1) (default 0.1,0.2,...,0.9); "
                             "one column q<level> each")
    parser.add_argument("--decode", choices=DECODE_MODES,
                        help="what decoding feeds back (MoE models; default sample; see moe_ts/forecasting.py): "
                             "median, mean, sample or uni2ts")
    parser.add_argument("--head", choices=HEADS,
                        help="which head decodes (MoE models with a long-horizon head, model.horizon_patches > 0): "
                             "next (the next-patch head, default) or horizon")
    parser.add_argument("--context-length", type=int, help="most recent points used (default: what the model fits)")
    parser.add_argument("--batch-size", type=int, default=64, help="series per forward pass (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument("--independent-series", action=argparse.BooleanOptionalAction, default=True,
                        help="each series its own random stream (seed + its values): its forecast does not depend "
                             "on the other series or --batch-size (default, as fast as shared draws except with "
                             "--decode uni2ts, which then decodes one series at a time); --no-independent-series "
                             "shares one stream across the batch")
    parser.add_argument("--group", action="store_true",
                        help="forecast all series of the file jointly as one multivariate group (any-variate, as "
                             "uni2ts; a model with the variate bias, e.g. a converted uni2ts model); the series must "
                             "have equal lengths")
    parser.add_argument("--past-covariates", type=column_names, default=[], metavar="A,B",
                        help="covariate columns observed in the context only (never forecast)")
    parser.add_argument("--known-covariates", type=column_names, default=[], metavar="C,D",
                        help="covariate columns known for the horizon too; their future values come from "
                             "--future-input")
    parser.add_argument("--future-input", type=Path,
                        help="the known covariates' values for the next --horizon steps (.csv, .csv.gz or .parquet, "
                             "the input's layout)")
    add_device_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.out.is_dir():
        raise IsADirectoryError(f"{args.out}: is a folder; --out names the file to write")
    if table_suffix(args.out) is None:
        raise ValueError(f"{args.out}: --out must end in .csv, .csv.gz or .parquet (the suffix picks the format)")
    if args.out.exists() and not args.overwrite:
        raise FileExistsError(f"{args.out}: exists already; pass --overwrite to replace it")
    from moe_ts.device import place_model, resolve_device, resolve_dtype

    device = resolve_device(args.device)  # a device this machine lacks: one line before anything is read
    dtype = resolve_dtype(args.dtype, device)
    series, file_horizon = read_input(args.input, args)
    horizon = args.horizon if args.horizon is not None else file_horizon
    if horizon is None:
        parser.error(f"{args.input} names no horizon: pass --horizon")
    if horizon <= 0:
        parser.error(f"--horizon must be > 0, got {horizon}")
    if not series:
        parser.error(f"{args.input}: no series")
    covariates = read_covariates(args, series, horizon)
    if covariates and args.group and not all(np.array_equal(per[0], one, equal_nan=True) for v in covariates.values()
                                             for per in v.values() for one in per):
        raise ValueError(f"{args.input}: --group with covariates needs the wide layout (covariate columns shared by "
                         f"the group's target columns)")

    from moe_ts.forecast_harness import independent_series
    from moe_ts.io.loading import load_model

    model = place_model(load_model(args.checkpoint), device, dtype)  # a MoE model or a distilled MLP student
    # The MoE model needs one patch; the student reads a fixed window. Shorter series are left-padded.
    patch = getattr(model.config, "patch_size", None) or model.config.context_length
    what = "one patch" if hasattr(model.config, "patch_size") else "the model's context window"
    short = [s.item_id for s in series if len(s.values) < patch]
    if short:
        shown = ", ".join(repr(i) for i in short[:5]) + (", ..." if len(short) > 5 else "")
        print(f"note: {len(short)} series shorter than {what} ({patch} points) are left-padded with missing "
              f"values: {shown}", file=sys.stderr)
    if args.head and (args.group or covariates or not hasattr(model, "decoding_head")):
        raise SystemExit(f"{args.checkpoint}: --head applies to a MoE model's plain forecasts (not --group, not "
                         f"covariates, not a student, MSFT or Time-LLM folder)")
    if covariates and not hasattr(model, "forecast_group"):
        raise SystemExit(f"{args.checkpoint}: covariates need a Moirai-MoE model folder")
    try:
        if args.group:
            if not hasattr(model, "forecast_group"):
                raise SystemExit(f"{args.checkpoint}: --group needs a Moirai-MoE model folder")
            decoding = {} if args.decode is None else {"decode": args.decode}
            shared = {k: {name: per[0] for name, per in v.items()} for k, v in covariates.items()}  # wide: shared
            out = model.forecast_group([s.values for s in series], horizon, num_samples=args.num_samples,
                                       seed=args.seed, context_length=args.context_length,
                                       quantile_levels=args.quantiles, **shared, **decoding)
        else:
            decoding = {} if args.decode is None else {"decode": args.decode}
            decoding.update({"head": args.head} if args.head else {})
            decoding.update(covariates)
            with independent_series(args.independent_series):
                out = model.forecast([s.values for s in series], horizon, num_samples=args.num_samples, seed=args.seed,
                                     context_length=args.context_length, quantile_levels=args.quantiles,
                                     batch_size=args.batch_size, allow_short_context=True,
                                     progress=len(series) > args.batch_size or horizon >= PROGRESS_HORIZON,
                                     **decoding)
    except ValueError as err:  # name the series by its id, not its index
        named = re.sub(r"series (\d+)", lambda m: f"series {series[int(m.group(1))].item_id!r}", str(err))
        raise SystemExit(f"{args.input}: {named}") from None
    frame = forecast_frame(series, out, horizon, quantile_names=lambda q: f"q{q:g}")
    frame.insert(1, "step", [h + 1 for _ in series for h in range(horizon)])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_table(frame, args.out)
    print(f"wrote {len(series)} series x {horizon} steps to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
