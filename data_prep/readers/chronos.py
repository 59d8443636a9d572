"""Chronos corpora (`autogluon/chronos_datasets`: `<config>/train-0000k-of-0000n.parquet`; ../shared/DATA_SOURCES.md).

One row per series: `id`, exactly one `timestamp` column (a list of timestamps), one or more numeric list columns
(each its own target, all of a row's lists equally long); other, non-list columns are static and not kept. A row
with one target column becomes one corpus entry (item_id = id); with several, one per column (item_id =
"id/column", group_id = id, variate = the column's index). The frequency is inferred from each row's
timestamps, which must increase on a regular calendar. Files are read one record batch at a time.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from data_prep.corpus import CorpusEntry
from data_prep.frequency import canonical_freq, inferred_alias
from data_prep.arrow_lists import float_values, is_list, is_numeric, list_parts
from data_prep.readers.errors import DataFormatError
from data_prep.series import Series
from moe_ts.io.dataframe import check_increasing

BATCH_ROWS = 256


def dataset_files(path: str | Path) -> list[tuple[str, list[Path]]]:
    """(dataset name, its Parquet files): a file (named by its folder), a folder of files (named by itself) or
    a folder of such folders (one dataset per folder holding Parquet files, named by its path under `path`)."""
    path = Path(path)
    if path.is_file():
        return [(path.parent.name or path.stem, [path])]
    if not path.is_dir():
        raise DataFormatError(path, "no such file or folder")
    here = sorted(path.glob("*.parquet"))
    if here:
        return [(path.name, here)]
    folders = sorted({p.parent for p in path.rglob("*.parquet")})
    if not folders:
        raise DataFormatError(path, "no .parquet file in or below it")
    return [("/".join(f.relative_to(path).parts), sorted(f.glob("*.parquet"))) for f in folders]


def columns_of(schema: pa.Schema, file: Path) -> tuple[str, list[str]]:
    """(timestamp column, target columns) of a Chronos file; DataFormatError when the layout does not fit."""
    if "id" not in schema.names:
        raise DataFormatError(file, f"no 'id' column (has {', '.join(schema.names)})")
    stamps, targets = [], []
    for field in schema:
        if not is_list(field.type):
            continue  # static column
        if pa.types.is_timestamp(field.type.value_type):
            stamps.append(field.name)
        elif is_numeric(field.type.value_type):
            targets.append(field.name)
        else:
            raise DataFormatError(file, f"unknown feature column {field.name!r} ({field.type}): neither the "
                                        f"timestamp list nor a numeric sequence")
    if len(stamps) != 1:
        raise DataFormatError(file, f"needs exactly one list-of-timestamps column, found {len(stamps)} {stamps}")
    if not targets:
        raise DataFormatError(file, "no numeric sequence column (target)")
    return stamps[0], targets


_WEEK_NS = 7 * 86_400 * 10**9
_ALIAS_BY_STEP: dict[tuple[int, int | None], str | None] = {}  # (step ns, weekday for week steps) -> alias


def _alias_of_constant_step(stamps: pd.DatetimeIndex) -> str | None:
    """pandas' inferred alias, computed once per (step, weekday) for rows of one constant step (a constant step
    gives the same alias whatever the start, except the weekday anchor of week steps); other rows ask pandas."""
    ns = stamps.asi8
    steps = np.diff(ns)
    if not len(steps) or not (steps == steps[0]).all():
        return inferred_alias(stamps)
    step = int(steps[0])
    key = (step, int(stamps[0].dayofweek) if step % _WEEK_NS == 0 else None)
    if key not in _ALIAS_BY_STEP:
        _ALIAS_BY_STEP[key] = inferred_alias(stamps)
    return _ALIAS_BY_STEP[key]


def row_frequency(stamps: pd.DatetimeIndex, file: Path, where: str) -> str:
    """Canonical frequency of one row's timestamps; DataFormatError when they go back, repeat or are irregular."""
    try:
        check_increasing(stamps, where, lambda j: f"position {j + 1}")
    except ValueError as err:  # TimeSeriesFrameError: "WHERE: position J: timestamp ... is earlier ..."
        raise DataFormatError(file, f"non-monotone timestamps: {err}") from None
    if len(stamps) < 3:
        raise DataFormatError(file, f"{where}: {len(stamps)} timestamps, too few to infer the frequency")
    alias = _alias_of_constant_step(stamps)
    if alias is None:
        raise DataFormatError(file, f"{where}: timestamps are not regularly spaced ({stamps[0]}, {stamps[1]}, "
                                    f"{stamps[2]}, ...); cannot infer the frequency")
    return canonical_freq(alias, f"{file}: {where}")


def read_files(files: list[Path], dataset: str) -> Iterator[CorpusEntry]:
    """Corpus entries of one Chronos dataset's Parquet files (see the module docstring)."""
    for file in files:
        try:
            parquet = pq.ParquetFile(file)
        except (pa.ArrowInvalid, OSError) as err:
            raise DataFormatError(file, f"not a Parquet file ({err})") from None
        stamp_col, targets = columns_of(parquet.schema_arrow, file)
        if parquet.metadata.num_rows == 0:
            raise DataFormatError(file, "empty shard: no rows")
        line = 0
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=["id", stamp_col, *targets]):
            ids = batch.column("id").to_pylist()
            stamp_child, stamp_off = list_parts(batch.column(stamp_col))
            stamp_all = stamp_child.cast(pa.timestamp("ns")).to_numpy(zero_copy_only=False)
            parts = {name: list_parts(batch.column(name)) for name in targets}
            for r, item in enumerate(ids):
                line += 1
                where = f"row {line} (id {item!r})"
                stamps = pd.DatetimeIndex(stamp_all[stamp_off[r]:stamp_off[r + 1]])
                if stamps.hasnans:
                    raise DataFormatError(file, f"{where}: a null timestamp")
                freq = row_frequency(stamps, file, where)
                for v, name in enumerate(targets):
                    child, off = parts[name]
                    values = float_values(child.slice(int(off[r]), int(off[r + 1] - off[r])))
                    if len(values) != len(stamps):
                        raise DataFormatError(file, f"{where}: column {name!r} has {len(values)} values, "
                                                    f"{stamp_col!r} {len(stamps)} timestamps")
                    many = len(targets) > 1
                    item_id = f"{item}/{name}" if many else str(item)
                    series = Series(item_id, np.asarray(values), freq, stamps[0], dataset, str(item) if many else None)
                    yield CorpusEntry(series, item_id, 0, len(values), v, False)
