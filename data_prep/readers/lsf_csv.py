"""LSF CSV reader (ETT, weather, electricity, traffic, ...): a date column plus one numeric column per variate."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from data_prep.frequency import canonical_freq, inferred_alias
from data_prep.readers.errors import DataFormatError
from data_prep.series import Series


def infer_freq(index: pd.DatetimeIndex, path: str | os.PathLike[str]) -> str:
    """Canonical frequency of a regular date index (from its first 1000 stamps); DataFormatError if irregular."""
    head = index[: min(len(index), 1000)]
    if len(head) < 3:
        raise DataFormatError(path, "fewer than 3 timestamps; cannot infer the frequency (pass freq=...)")
    alias = inferred_alias(head)
    if alias is None:
        raise DataFormatError(path, "timestamps are not regularly spaced; cannot infer the frequency (pass freq=...)")
    return canonical_freq(alias, str(path))


def read_lsf_csv(
    path: str | os.PathLike[str],
    dataset: str = "",
    freq: str | None = None,
    date_column: str = "date",
    columns: list[str] | None = None,
) -> list[Series]:
    """One Series per variate column (item_id = column name, group_id = file stem, start = first date).
    `freq` defaults to the one inferred from the dates; `columns` selects variates."""
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataFormatError(path, f"not a CSV file: {str(err).splitlines()[0]}") from None
    if date_column not in frame.columns:
        raise DataFormatError(path, f"no {date_column!r} column (columns: {', '.join(frame.columns[:8])})", 1)
    if frame.shape[1] < 2:
        raise DataFormatError(path, "no variate columns beside the date column", 1)
    try:
        dates = pd.DatetimeIndex(pd.to_datetime(frame[date_column], format="mixed"))
    except (ValueError, TypeError):
        bad = next(i for i, v in enumerate(frame[date_column]) if pd.to_datetime(v, errors="coerce") is pd.NaT)
        raise DataFormatError(path, f"unparseable date {frame[date_column].iloc[bad]!r}", bad + 2) from None
    canon = canonical_freq(freq, str(path)) if freq is not None else infer_freq(dates, path)
    wanted = [c for c in frame.columns if c != date_column] if columns is None else columns
    out = []
    for col in wanted:
        if col not in frame.columns:
            raise DataFormatError(path, f"no column {col!r}", 1)
        raw = frame[col].str.strip()
        raw = raw.mask(raw.isin(["", "NA", "NaN", "nan"]))
        values = pd.to_numeric(raw, errors="coerce")
        bad = values.isna() & raw.notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataFormatError(path, f"non-numeric value {raw.iloc[row]!r} in column {col!r}", row + 2)
        out.append(Series(item_id=str(col), target=values.to_numpy(np.float64), freq=canon, start=dates[0],
                          dataset=dataset, group_id=path.stem))
    return out
