"""A user's own tables (`parquet:GLOB`, `csv:GLOB`) in the layouts `moe-ts forecast` reads (moe_ts/io/dataframe.py).

long: an `item_id` column, a `timestamp` column and one or more value columns (each its own series per item;
several make a group: item_id "item/column", group_id = item, variate = the column's index);
wide: a timestamp column (`timestamp`, else `date`) and one value column per series (item_id = column name).
Timestamps are validated as `moe-ts forecast` does (increasing, on one regular calendar; absent steps become
NaN). Each file is one corpus dataset, named by its stem, and is read whole (one file at a time).
"""
from __future__ import annotations

import glob
from pathlib import Path
from typing import Iterator

import pandas as pd

from data_prep.corpus import CorpusEntry
from data_prep.frequency import canonical_freq
from data_prep.readers.errors import DataFormatError
from data_prep.series import Series
from moe_ts.io.dataframe import TimedSeries, TimeSeriesFrameError, series_from_long, series_from_wide

ID, TIMESTAMP, DATE = "item_id", "timestamp", "date"


def matching_files(pattern: str) -> list[tuple[str, Path]]:
    """(dataset name = file stem, file) of every file the glob matches, in path order."""
    files = sorted(Path(p) for p in glob.glob(pattern) if Path(p).is_file())
    if not files:
        raise DataFormatError(pattern, "no file matches")
    return [(f.stem, f) for f in files]


def read_table(path: Path, kind: str) -> pd.DataFrame:
    """A Parquet or CSV file as a DataFrame (CSV cells as text, parsed and checked by moe_ts.io.dataframe)."""
    try:
        if kind == "parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, ValueError) as err:
        raise DataFormatError(path, f"not a {kind} file: {str(err).splitlines()[0]}") from None


def _timed(frame: pd.DataFrame, path: Path, kind: str) -> list[tuple[TimedSeries, str | None, int]]:
    """(series, group id, variate) of every series of the table."""
    line = (lambda i: f"line {i + 2}") if kind == "csv" else (lambda i: f"row {i + 1}")
    if ID in frame.columns:
        values = [c for c in frame.columns if c not in (ID, TIMESTAMP)]
        if not values:
            raise DataFormatError(path, f"long layout: no value column beside {ID!r} and {TIMESTAMP!r}")
        if len(values) == 1:
            return [(s, None, 0) for s in series_from_long(frame, ID, TIMESTAMP, values[0], None, str(path), line)]
        by_item: dict[str, list[tuple[TimedSeries, str | None, int]]] = {}
        for v, column in enumerate(values):
            for s in series_from_long(frame, ID, TIMESTAMP, column, None, str(path), line):
                named = TimedSeries(f"{s.item_id}/{column}", s.values, s.start, s.freq)
                by_item.setdefault(s.item_id, []).append((named, s.item_id, v))
        return [entry for group in by_item.values() for entry in group]  # item by item, variates in column order
    stamp = TIMESTAMP if TIMESTAMP in frame.columns else DATE
    return [(s, None, 0) for s in series_from_wide(frame, stamp, None, str(path), line)]


def read_file(path: Path, kind: str, dataset: str) -> Iterator[CorpusEntry]:
    """Corpus entries of one long or wide table."""
    frame = read_table(path, kind)
    if frame.empty:
        raise DataFormatError(path, "empty table: no rows")
    try:
        found = _timed(frame, path, kind)
    except TimeSeriesFrameError as err:
        raise DataFormatError(path, str(err).removeprefix(f"{path}: ")) from None
    for s, group, variate in found:
        try:
            freq = canonical_freq(s.freq or "", str(path))
        except ValueError as err:
            raise DataFormatError(path, f"series {s.item_id!r}: {err}") from None
        series = Series(s.item_id, s.values, freq, s.start, dataset, group)
        yield CorpusEntry(series, s.item_id, 0, len(s.values), variate, False)
