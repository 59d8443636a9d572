"""pandas in, pandas out: long or wide tables of timestamped series, validated, and forecasts as a DataFrame.

Input layouts (the ones GluonTS / Chronos / AutoGluon users have):
- long: one row per (item, timestamp) with an id column (default `item_id`), a timestamp column (default
  `timestamp`) and a target column (default `target`);
- wide: one timestamp column (or a DatetimeIndex) and one numeric column per series (the LSF CSV layout).

Timestamps are datetimes, date strings or an integer index, read by `moe_ts.io.calendar` (ambiguous day/month
order refused). Each series' whole timestamp column is validated: strictly increasing (no duplicate, no reversed
block) and on one regular calendar of frequency `freq` (given, or inferred from the data), where absent steps are missing
values (NaN). The first offending row is named. Forecast timestamps continue the series' own calendar.
`predict_df` returns one row per item and future step: item_id, timestamp, mean and one column per quantile
level ("q0.1" .. "q0.9", the columns `moe-ts forecast` writes), like AutoGluon's TimeSeriesPredictor.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from moe_ts.forecast_output import DEFAULT_QUANTILES, ForecastOutput
from moe_ts.io.calendar import (MAX_MISSING_FACTOR, TimeSeriesFrameError, check_increasing, future_stamps,
                                infer_frequency, parse_timestamps, regular_positions)
from moe_ts.io.calendar import row_label as _row_label

__all__ = ["MAX_MISSING_FACTOR", "TimeSeriesFrameError", "TimedSeries", "check_increasing", "covariate_values",
           "forecast_frame",
           "infer_frequency", "numeric_values", "parse_timestamps", "predict_df", "regular_positions",
           "series_from_frame", "series_from_long", "series_from_wide"]


@dataclass
class TimedSeries:
    """One series on a regular calendar: values[i] belongs to start + i·freq (NaN = missing); an integer `start`
    is an integer time index whose `freq` is the step."""

    item_id: str
    values: np.ndarray
    start: pd.Timestamp | int | None  # None: timestamps unknown (e.g. a .tsf file without start dates)
    freq: str | None

    def future_timestamps(self, horizon: int) -> pd.DatetimeIndex | list[int] | list[None]:
        """The `horizon` timestamps after the last one, on the series' calendar."""
        if self.start is None or not self.freq:
            return [None] * horizon
        return future_stamps(self.start, len(self.values), self.freq, horizon)


def numeric_values(column: pd.Series, where: str, label: Callable[[int], str] = _row_label) -> np.ndarray:
    """float64 values of a column (empty / NA / NaN = missing); TimeSeriesFrameError naming a non-numeric one."""
    if pd.api.types.is_numeric_dtype(column):
        return column.to_numpy(np.float64, na_value=np.nan)
    raw = column.astype("string").str.strip()
    raw = raw.mask(raw.isin(["", "NA", "NaN", "nan"]))
    values = pd.to_numeric(raw, errors="coerce")
    bad = np.flatnonzero((values.isna() & raw.notna()).to_numpy())
    if len(bad):
        raise TimeSeriesFrameError(f"{where}: {label(int(bad[0]))}: non-numeric value {raw.iloc[int(bad[0])]!r} "
                                   f"in column {column.name!r}")
    return values.to_numpy(np.float64, na_value=np.nan)


def _on_calendar(item_id: str, stamps: pd.DatetimeIndex | pd.Index, values: np.ndarray, freq: str | None, where: str,
                 label: Callable[[int], str]) -> TimedSeries:
    if len(stamps) == 0:
        raise TimeSeriesFrameError(f"{where}: series {item_id!r} has no rows")
    if len(stamps) == 1:
        if freq is None:
            raise TimeSeriesFrameError(f"{where}: series {item_id!r} has one row, cannot infer the frequency; pass it")
        positions = np.zeros(1, dtype=np.int64)
    else:
        if freq is None:
            check_increasing(stamps, where, label)  # first, so that a reversed column is named as such
            freq = infer_frequency(stamps, f"{where}: series {item_id!r}")
        positions = regular_positions(stamps, freq, where, label)
    full = np.full(int(positions[-1]) + 1, np.nan)
    full[positions] = values
    start = stamps[0] if isinstance(stamps, pd.DatetimeIndex) else int(stamps[0])  # an integer time index
    return TimedSeries(item_id=str(item_id), values=full, start=start, freq=freq)


def series_from_long(df: pd.DataFrame, id_column: str = "item_id", timestamp_column: str = "timestamp",
                     target: str = "target", freq: str | None = None, where: str = "DataFrame",
                     label: Callable[[int], str] = _row_label, date_format: str | None = None,
                     dayfirst: bool | None = None) -> list[TimedSeries]:
    """One TimedSeries per item of a long table (items in order of first appearance); every row needs an id.
    date_format / dayfirst: how date strings are read (`moe_ts.io.calendar.parse_timestamps`)."""
    _require_columns(df, (id_column, timestamp_column, target), where)
    raw_ids = df[id_column]
    empty = np.flatnonzero(raw_ids.isna().to_numpy() | (raw_ids.astype(str).str.strip() == "").to_numpy())
    if len(empty):
        raise TimeSeriesFrameError(f"{where}: {label(int(empty[0]))}: empty series id in column {id_column!r} "
                                   f"(every row needs one)")
    stamps = parse_timestamps(df[timestamp_column], where, label, date_format, dayfirst)
    values = numeric_values(df[target], where, label)
    ids = raw_ids.astype(str).to_numpy()
    items = [(item, np.flatnonzero(ids == item)) for item in pd.unique(ids)]
    common = None
    if freq is None and any(len(rows) < 3 for _, rows in items):
        common = _common_frequency(items, stamps, where)  # a 1- or 2-row item cannot show its own frequency
    out = []
    for item, rows in items:
        item_label = (lambda j, rows=rows: label(int(rows[j])))
        item_freq = freq if freq is not None else (common if len(rows) < 3 else None)
        out.append(_on_calendar(item, stamps[rows], values[rows], item_freq, f"{where} (item {item!r})", item_label))
    return out


def _common_frequency(items: list[tuple[str, np.ndarray]], stamps: pd.DatetimeIndex | pd.Index,
                      where: str) -> str | None:
    """The frequency most items with 3+ increasing timestamps show, or None when none does."""
    found: list[str] = []
    for item, rows in items:
        part = stamps[rows]
        if len(part) >= 3 and bool(np.all(np.asarray(part[1:] > part[:-1]))):
            try:
                found.append(infer_frequency(part, f"{where} (item {item!r})"))
            except TimeSeriesFrameError:
                continue
    return max(set(found), key=found.count) if found else None


def series_from_wide(df: pd.DataFrame, timestamp_column: str = "date", freq: str | None = None,
                     where: str = "DataFrame", label: Callable[[int], str] = _row_label,
                     columns: Sequence[str] | None = None, date_format: str | None = None,
                     dayfirst: bool | None = None) -> list[TimedSeries]:
    """One TimedSeries per value column of a wide table sharing one timestamp column."""
    _require_columns(df, (timestamp_column,), where)
    wanted = [c for c in df.columns if c != timestamp_column] if columns is None else list(columns)
    if not wanted:
        raise TimeSeriesFrameError(f"{where}: no value columns beside the timestamp column {timestamp_column!r}")
    _require_columns(df, wanted, where)
    stamps = parse_timestamps(df[timestamp_column], where, label, date_format, dayfirst)
    return [_on_calendar(str(c), stamps, numeric_values(df[c], where, label), freq, where, label) for c in wanted]


def series_from_frame(df: pd.DataFrame, id_column: str = "item_id", timestamp_column: str = "timestamp",
                      target: str = "target", freq: str | None = None, date_format: str | None = None,
                      dayfirst: bool | None = None, where: str = "DataFrame") -> tuple[list[TimedSeries], bool]:
    """The series of a long frame (it has `id_column`) or a wide one (a timestamp column, `timestamp_column`
    or else `date`, or a DatetimeIndex, and one column per series); and whether it was long."""
    if id_column in df.columns:
        return series_from_long(df, id_column, timestamp_column, target, freq, where, date_format=date_format,
                                dayfirst=dayfirst), True
    if timestamp_column not in df.columns and "date" in df.columns:
        timestamp_column = "date"
    elif timestamp_column not in df.columns and isinstance(df.index, pd.DatetimeIndex):
        df = df.reset_index(names=timestamp_column)
    return series_from_wide(df, timestamp_column, freq, where, date_format=date_format, dayfirst=dayfirst), False


def _require_columns(df: pd.DataFrame, names: Sequence[str], where: str) -> None:
    absent = [n for n in names if n not in df.columns]
    if absent:
        shown = ", ".join(map(str, list(df.columns)[:10]))
        raise TimeSeriesFrameError(f"{where}: no column {absent[0]!r} (columns: {shown})")


def covariate_values(df: pd.DataFrame, series: Sequence[TimedSeries], names: Sequence[str], known: bool,
                     long: bool, horizon: int, future_df: pd.DataFrame | None = None, id_column: str = "item_id",
                     timestamp_column: str = "timestamp", freq: str | None = None, where: str = "DataFrame",
                     date_format: str | None = None, dayfirst: bool | None = None) -> dict[str, list[np.ndarray]]:
    """Each covariate column's values for each target series, on the series' calendar: over its context for a
    past-only covariate, over its context and the next `horizon` steps for a known one (`known`), whose future
    values come from `future_df` (the same layout: ids and timestamps of the future steps, and the column).

    Long layout: each item's own covariates. Wide layout: the covariate columns are shared by every target column.
    A column that is absent, or a known covariate without its horizon values, is a one-line error naming it."""
    kind = "known" if known else "past"
    out: dict[str, list[np.ndarray]] = {}
    for name in names:
        _require_columns(df, (name,), where)
        keys = [id_column, timestamp_column] if long else [timestamp_column]
        frame = df[keys + [name]]
        if known:
            if future_df is None:
                raise TimeSeriesFrameError(f"known covariate {name!r}: no values for the horizon (give its next "
                                           f"{horizon} values in a future frame: --future-input / future_df)")
            if name not in future_df.columns:
                raise TimeSeriesFrameError(f"known covariate {name!r}: no column {name!r} in the future frame, so no "
                                           f"values for the horizon")
            _require_columns(future_df, keys, f"{where} (future frame)")
            frame = pd.concat([frame, future_df[keys + [name]]], ignore_index=True)
        if long:
            found = {c.item_id: c for c in series_from_long(frame, id_column, timestamp_column, name, freq, where,
                                                            date_format=date_format, dayfirst=dayfirst)}
        else:
            shared = series_from_wide(frame, timestamp_column, freq, where, columns=[name], date_format=date_format,
                                      dayfirst=dayfirst)[0]
            found = {s.item_id: shared for s in series}
        values = []
        for s in series:
            c = found.get(s.item_id)
            if c is None or c.start != s.start:
                raise TimeSeriesFrameError(f"{kind} covariate {name!r}: series {s.item_id!r} has no values on its "
                                           f"calendar")
            need = len(s.values) + (horizon if known else 0)
            if known and len(c.values) < need:
                raise TimeSeriesFrameError(f"known covariate {name!r}: series {s.item_id!r} has "
                                           f"{max(len(c.values) - len(s.values), 0)} future values, needs {horizon} "
                                           f"(no values for the horizon)")
            values.append(c.values[:need])
        out[name] = values
    return out


def quantile_column(level: float) -> str:
    """The name of a quantile level's column, as the CLI writes it: "q0.1"."""
    return f"q{level:g}"


def forecast_frame(series: Sequence[TimedSeries], out: ForecastOutput, horizon: int,
                   quantile_names: Callable[[float], str] = quantile_column) -> pd.DataFrame:
    """One row per series and future step: item_id, timestamp, mean, then one column per quantile level."""
    parts = []
    for i, s in enumerate(series):
        part = {"item_id": [s.item_id] * horizon, "timestamp": s.future_timestamps(horizon), "mean": out.mean[i]}
        for q, level in enumerate(out.quantile_levels):
            part[quantile_names(level)] = out.quantiles[i, q]
        parts.append(pd.DataFrame(part))
    return pd.concat(parts, ignore_index=True)


def predict_df(model: Any, df: pd.DataFrame, prediction_length: int, *, id_column: str = "item_id",
               timestamp_column: str = "timestamp", target: str = "target", freq: str | None = None,
               date_format: str | None = None, dayfirst: bool | None = None,
               quantile_levels: Sequence[float] = DEFAULT_QUANTILES, num_samples: int = 100, seed: int | None = None,
               batch_size: int = 64, context_length: int | None = None, decode: str = "sample",
               progress: bool = False, independent_series: bool = True, past_covariates: Sequence[str] = (),
               known_covariates: Sequence[str] = (), future_df: pd.DataFrame | None = None) -> pd.DataFrame:
    """Forecast every series of a long or wide DataFrame (see the module docstring and `series_from_frame`).

    freq, date_format, dayfirst: the calendar and how date strings are read (inferred / refused when ambiguous).
    num_samples, seed, batch_size, context_length, decode, progress: as `model.forecast`. independent_series: with
    a seed, each series its own random stream (`moe_ts.forecast_harness.independent_series`). Series shorter than
    one patch are left-padded with missing values (as `moe-ts eval` does). Returns item_id (`id_column`),
    timestamp (`timestamp_column`), mean and the quantile columns "q0.1" .. "q0.9", as `moe-ts forecast` writes.
    past_covariates / known_covariates: covariate columns by name (`covariate_values`; in the wide layout they are
    not targets, and every target gets them); a known covariate's horizon values come from `future_df` (the same
    layout, rows for the next `prediction_length` steps). With covariates each series is decoded with them as
    one any-variate group (`moe_ts.group_decoding.forecast_with_covariates`).
    """
    from moe_ts.forecast_harness import independent_series as streams  # torch: only when forecasting

    covariate_columns = list(past_covariates) + list(known_covariates)
    long = id_column in df.columns
    if covariate_columns and not long:
        if timestamp_column not in df.columns and "date" in df.columns:
            timestamp_column = "date"
        elif timestamp_column not in df.columns and isinstance(df.index, pd.DatetimeIndex):
            df = df.reset_index(names=timestamp_column)
        _require_columns(df, [timestamp_column] + covariate_columns, "DataFrame")
        targets = [c for c in df.columns if c != timestamp_column and c not in covariate_columns]
        series = series_from_wide(df, timestamp_column, freq, columns=targets, date_format=date_format,
                                  dayfirst=dayfirst)
    else:
        series, _ = series_from_frame(df, id_column, timestamp_column, target, freq, date_format, dayfirst)
    covariates = {}
    if covariate_columns:
        common = dict(long=long, horizon=prediction_length, future_df=future_df, id_column=id_column,
                      timestamp_column=timestamp_column, freq=freq, date_format=date_format, dayfirst=dayfirst)
        covariates = {"past_covariates": covariate_values(df, series, list(past_covariates), False, **common),
                      "known_covariates": covariate_values(df, series, list(known_covariates), True, **common)}
    with streams(independent_series):
        out = model.forecast([s.values for s in series], prediction_length, num_samples=num_samples, seed=seed,
                             quantile_levels=tuple(quantile_levels), batch_size=batch_size,
                             context_length=context_length, decode=decode, allow_short_context=True,
                             progress=progress, **covariates)
    frame = forecast_frame(series, out, prediction_length)
    return frame.rename(columns={"item_id": id_column, "timestamp": timestamp_column})
