"""pandas in, pandas out: long or wide tables of timestamped series, validated, and forecasts as a DataFrame.

Input layouts (the ones GluonTS / Chronos / AutoGluon users have):
- long: one row per (item, timestamp) with an id column (default `item_id`), a timestamp column (default
  `timestamp`) and a target column (default `target`);
- wide: one timestamp column and one numeric column per series (the LSF CSV layout).

Each series' whole timestamp column is validated: strictly increasing (no duplicate, no reversed block) and on
one regular calendar of frequency `freq` (given, or inferred from the data), where absent steps are missing
values (NaN). The first offending row is named. Forecast timestamps continue the series' own calendar.
`predict_df` returns one row per item and future step: item_id, timestamp, mean and one column per quantile
level ("0.1" .. "0.9"), like AutoGluon's TimeSeriesPredictor / Chronos' predict_df.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

from moe_ts.forecast_output import DEFAULT_QUANTILES, ForecastOutput

MAX_MISSING_FACTOR = 100  # a calendar more than 100x longer than the rows is a wrong frequency, not gaps


class TimeSeriesFrameError(ValueError):
    """A table of time series is malformed: missing column, bad value, or irregular timestamps."""


@dataclass
class TimedSeries:
    """One series on a regular calendar: values[i] belongs to start + i·freq (NaN = missing)."""

    item_id: str
    values: np.ndarray
    start: pd.Timestamp | None  # None: timestamps unknown (e.g. a .tsf file without start dates)
    freq: str | None

    def future_timestamps(self, horizon: int) -> pd.DatetimeIndex | list[None]:
        """The `horizon` timestamps after the last one, on the series' calendar."""
        if self.start is None or not self.freq:
            return [None] * horizon
        last = self.start + (len(self.values) - 1) * to_offset(self.freq)
        return pd.date_range(last, periods=horizon + 1, freq=self.freq)[1:]


def _row_label(position: int) -> str:
    return f"row {position + 1}"


def _freq_alias(freq: Any) -> str | None:
    if freq is None:
        return None
    return freq if isinstance(freq, str) else getattr(freq, "freqstr", str(freq))


def infer_frequency(stamps: pd.DatetimeIndex, where: str) -> str:
    """The frequency of strictly increasing timestamps that may have gaps: pandas' inference on the whole
    column, else on its head or tail (gaps elsewhere are then checked by `regular_positions`)."""
    if len(stamps) < 3:
        raise TimeSeriesFrameError(f"{where}: fewer than 3 timestamps, cannot infer the frequency; pass it (--freq / freq=)")
    n = len(stamps)
    for size in (n, 1000, 100, 10, 3):
        for part in (stamps[:size], stamps[-size:]):
            if len(part) >= 3:
                alias = _freq_alias(pd.infer_freq(part))
                if alias:
                    return alias
    raise TimeSeriesFrameError(f"{where}: timestamps are not regularly spaced anywhere (e.g. {stamps[0]}, {stamps[1]}, "
                               f"{stamps[2]}); cannot infer the frequency; pass it (--freq / freq=)")


def check_increasing(stamps: pd.DatetimeIndex, where: str, label: Callable[[int], str] = _row_label) -> None:
    """TimeSeriesFrameError naming the first row whose timestamp repeats or goes back."""
    back = np.flatnonzero(np.asarray(stamps[1:] <= stamps[:-1]))
    if len(back):
        i = int(back[0]) + 1
        what = "repeats the previous timestamp" if stamps[i] == stamps[i - 1] else \
            f"is earlier than the previous one ({stamps[i - 1]}); timestamps must increase (sort the data)"
        raise TimeSeriesFrameError(f"{where}: {label(i)}: timestamp {stamps[i]} {what}")


def regular_positions(stamps: pd.DatetimeIndex, freq: str, where: str,
                      label: Callable[[int], str] = _row_label) -> np.ndarray:
    """Position of each timestamp on the calendar start, start+freq, ...; TimeSeriesFrameError naming the first
    row that repeats, goes back, or falls between calendar steps."""
    check_increasing(stamps, where, label)
    try:
        offset = to_offset(freq)
    except ValueError as err:
        raise TimeSeriesFrameError(f"{where}: unknown frequency {freq!r} ({err})") from None
    if isinstance(offset, pd.offsets.Tick):
        steps = (stamps[-1] - stamps[0]) / pd.Timedelta(offset)
        if steps > MAX_MISSING_FACTOR * len(stamps) + 1000:
            raise TimeSeriesFrameError(f"{where}: {freq!r} is far finer than the timestamps ({stamps[0]} .. {stamps[-1]}, "
                                       f"{len(stamps)} rows); pass the right --freq / freq=")
    grid = pd.date_range(stamps[0], stamps[-1], freq=offset)
    positions = grid.get_indexer(stamps) if len(grid) else np.full(len(stamps), -1)
    off = np.flatnonzero(positions < 0)
    if len(off):
        i = int(off[0])
        raise TimeSeriesFrameError(f"{where}: {label(i)}: timestamp {stamps[i]} is not on the {freq!r} calendar that "
                                   f"starts at {stamps[0]} (irregular spacing; pass --freq / freq= if {freq!r} is wrong)")
    return positions


def parse_timestamps(column: pd.Series, where: str, label: Callable[[int], str] = _row_label) -> pd.DatetimeIndex:
    """Timestamps of a column; TimeSeriesFrameError naming the first one that does not parse."""
    if pd.api.types.is_datetime64_any_dtype(column):
        stamps = pd.DatetimeIndex(column)
    else:
        try:
            stamps = pd.DatetimeIndex(pd.to_datetime(column, format="mixed"))
        except (ValueError, TypeError):
            parsed = [pd.to_datetime(v, errors="coerce") for v in column]
            bad = next(i for i, v in enumerate(parsed) if v is pd.NaT)
            raise TimeSeriesFrameError(f"{where}: {label(bad)}: unparseable timestamp {column.iloc[bad]!r}") from None
    if stamps.hasnans:
        bad = int(np.flatnonzero(stamps.isna())[0])
        raise TimeSeriesFrameError(f"{where}: {label(bad)}: empty timestamp")
    return stamps


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


def _on_calendar(item_id: str, stamps: pd.DatetimeIndex, values: np.ndarray, freq: str | None, where: str,
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
    return TimedSeries(item_id=str(item_id), values=full, start=stamps[0], freq=freq)


def series_from_long(df: pd.DataFrame, id_column: str = "item_id", timestamp_column: str = "timestamp",
                     target: str = "target", freq: str | None = None, where: str = "DataFrame",
                     label: Callable[[int], str] = _row_label) -> list[TimedSeries]:
    """One TimedSeries per item of a long table (items in order of first appearance)."""
    _require_columns(df, (id_column, timestamp_column, target), where)
    stamps = parse_timestamps(df[timestamp_column], where, label)
    values = numeric_values(df[target], where, label)
    ids = df[id_column].astype(str).to_numpy()
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


def _common_frequency(items: list[tuple[str, np.ndarray]], stamps: pd.DatetimeIndex, where: str) -> str | None:
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
                     columns: Sequence[str] | None = None) -> list[TimedSeries]:
    """One TimedSeries per value column of a wide table sharing one timestamp column."""
    _require_columns(df, (timestamp_column,), where)
    wanted = [c for c in df.columns if c != timestamp_column] if columns is None else list(columns)
    if not wanted:
        raise TimeSeriesFrameError(f"{where}: no value columns beside the timestamp column {timestamp_column!r}")
    _require_columns(df, wanted, where)
    stamps = parse_timestamps(df[timestamp_column], where, label)
    return [_on_calendar(str(c), stamps, numeric_values(df[c], where, label), freq, where, label) for c in wanted]


def _require_columns(df: pd.DataFrame, names: Sequence[str], where: str) -> None:
    absent = [n for n in names if n not in df.columns]
    if absent:
        shown = ", ".join(map(str, list(df.columns)[:10]))
        raise TimeSeriesFrameError(f"{where}: no column {absent[0]!r} (columns: {shown})")


def forecast_frame(series: Sequence[TimedSeries], out: ForecastOutput, horizon: int,
                   quantile_names: Callable[[float], str] = lambda q: f"{q:g}") -> pd.DataFrame:
    """One row per series and future step: item_id, timestamp, mean, then one column per quantile level."""
    parts = []
    for i, s in enumerate(series):
        part = {"item_id": [s.item_id] * horizon, "timestamp": s.future_timestamps(horizon), "mean": out.mean[i]}
        for q, level in enumerate(out.quantile_levels):
            part[quantile_names(level)] = out.quantiles[i, q]
        parts.append(pd.DataFrame(part))
    return pd.concat(parts, ignore_index=True)


def predict_df(model: Any, df: pd.DataFrame, prediction_length: int, id_column: str = "item_id",
               timestamp_column: str = "timestamp", target: str = "target", freq: str | None = None,
               quantile_levels: Sequence[float] = DEFAULT_QUANTILES, **forecast_kwargs: Any) -> pd.DataFrame:
    """Forecast every item of a long DataFrame; see the module docstring for the layouts.

    Extra keyword arguments go to `model.forecast` (num_samples, seed, context_length, ...). Series shorter
    than one patch are left-padded with missing values (as `moe-ts eval` does).
    """
    series = series_from_long(df, id_column, timestamp_column, target, freq)
    forecast_kwargs.setdefault("allow_short_context", True)
    out = model.forecast([s.values for s in series], prediction_length, quantile_levels=tuple(quantile_levels),
                         **forecast_kwargs)
    frame = forecast_frame(series, out, prediction_length)
    return frame.rename(columns={"item_id": id_column, "timestamp": timestamp_column})
