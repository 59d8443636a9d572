"""pandas input: a Series with a DatetimeIndex, a wide DataFrame (one column per series) or a long DataFrame
(id, timestamp, value columns) → list[Series]."""
from __future__ import annotations

import numpy as np
import pandas as pd

from data_prep.frequency import canonical_freq, inferred_alias
from data_prep.series import Series


def _freq_of(index: pd.Index, freq: str | None, what: str) -> str:
    if freq is not None:
        return canonical_freq(freq, what)
    if not isinstance(index, pd.DatetimeIndex):
        raise ValueError(f"{what}: index is not a DatetimeIndex; pass freq=")
    alias = index.freqstr
    if alias is None and len(index) >= 3:
        alias = inferred_alias(index)
    if alias is None:
        raise ValueError(f"{what}: cannot infer a regular frequency from the index; pass freq=")
    return canonical_freq(alias, what)


def _start_of(index: pd.Index) -> pd.Timestamp | None:
    return pd.Timestamp(index[0]) if isinstance(index, pd.DatetimeIndex) and len(index) else None


def from_pandas_series(series: pd.Series, item_id: str | None = None, freq: str | None = None, dataset: str = "") -> Series:
    """A pandas Series (DatetimeIndex or plain index with freq=) → Series."""
    name = item_id if item_id is not None else str(series.name if series.name is not None else "0")
    values = pd.to_numeric(series, errors="raise").to_numpy(np.float64)
    return Series(item_id=name, target=values, freq=_freq_of(series.index, freq, f"series {name!r}"),
                  start=_start_of(series.index), dataset=dataset)


def from_wide_frame(frame: pd.DataFrame, freq: str | None = None, dataset: str = "", group_id: str | None = None) -> list[Series]:
    """One Series per column; the index gives the dates. Columns share `group_id` (a multivariate set)."""
    canon = _freq_of(frame.index, freq, "wide frame")
    out = []
    for col in frame.columns:
        values = pd.to_numeric(frame[col], errors="raise").to_numpy(np.float64)
        out.append(Series(item_id=str(col), target=values, freq=canon, start=_start_of(frame.index),
                          dataset=dataset, group_id=group_id))
    return out


def from_long_frame(
    frame: pd.DataFrame,
    id_column: str = "item_id",
    time_column: str = "timestamp",
    value_column: str = "target",
    freq: str | None = None,
    dataset: str = "",
) -> list[Series]:
    """Rows (id, time, value) → one Series per id, sorted by time; gaps in the regular grid become NaN."""
    for col in (id_column, time_column, value_column):
        if col not in frame.columns:
            raise ValueError(f"long frame has no column {col!r} (columns: {list(frame.columns)})")
    out = []
    for sid, part in frame.groupby(id_column, sort=False):
        part = part.sort_values(time_column)
        times = pd.DatetimeIndex(pd.to_datetime(part[time_column]))
        if times.has_duplicates:
            raise ValueError(f"long frame: series {sid!r} has duplicate timestamps")
        canon = _freq_of(times, freq, f"series {sid!r}")
        values = pd.Series(pd.to_numeric(part[value_column], errors="raise").to_numpy(np.float64), index=times)
        grid = pd.date_range(times[0], times[-1], freq=canon)
        if len(grid) != len(times) or not grid.equals(times):
            extra = times.difference(grid)
            if len(extra):
                raise ValueError(f"long frame: series {sid!r} has timestamp {extra[0]} off the {canon} grid")
            values = values.reindex(grid)
        out.append(Series(item_id=str(sid), target=values.to_numpy(), freq=canon, start=times[0], dataset=dataset))
    return out
