"""SILSO daily total sunspot number (SN_d_tot_V2.0.csv): ';'-separated 'year;month;day;decimal year;SN;std;
n_obs;definitive', SN = -1 marks a missing day."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from data_prep.readers.errors import DataFormatError


def read_silso_daily(path: str | os.PathLike[str]) -> pd.Series:
    """Daily sunspot numbers indexed by date, NaN where SILSO has -1; checks the days are consecutive."""
    path = Path(path)
    dates: list[pd.Timestamp] = []
    values: list[float] = []
    with open(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            cells = [c.strip() for c in line.split(";")]
            if len(cells) < 5:
                raise DataFormatError(path, f"expected at least 5 ';'-separated fields, got {len(cells)}", lineno)
            try:
                year, month, day = int(cells[0]), int(cells[1]), int(cells[2])
                value = float(cells[4])
            except ValueError:
                raise DataFormatError(path, f"non-numeric date or value in {line.strip()[:40]!r}", lineno) from None
            try:
                dates.append(pd.Timestamp(year=year, month=month, day=day))
            except ValueError:
                raise DataFormatError(path, f"invalid date {year}-{month}-{day}", lineno) from None
            values.append(np.nan if value == -1 else value)
    if not dates:
        raise DataFormatError(path, "no data rows")
    index = pd.DatetimeIndex(dates)
    gaps = np.flatnonzero(np.diff(index.values.astype("datetime64[D]").astype(np.int64)) != 1)
    if len(gaps):
        raise DataFormatError(path, f"days are not consecutive after {index[gaps[0]].date()}")
    return pd.Series(np.asarray(values, dtype=np.float64), index=index)
