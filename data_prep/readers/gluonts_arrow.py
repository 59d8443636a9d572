"""GluonTS Arrow files (`gluonts:GLOB@FREQ`): what `gluonts.dataset.arrow.ArrowWriter` writes, e.g. Chronos'
training corpora (`tsmixup-data.arrow`, `kernelsynth-data.arrow`).

An Arrow IPC file (or stream), one row per series: `start` (timestamp), `target` (list of numbers; a 2-D array is
stored flattened with its shape in `target._np_shape`, or as a list of D lists), optionally `item_id`, `freq` and
covariates `past_feat_dynamic_real` / `feat_dynamic_real` (same encodings). GluonTS does not store the frequency
(a Period start is written as a timestamp), so it comes from a `freq` column or from the source spec's `@FREQ`;
neither is an error. Each file is one corpus dataset named by its stem; a 2-D target becomes one row per variate
(group_id = the item), covariates rows of their own (never training targets), as for LOTSA.
"""
from __future__ import annotations

import glob
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa

from data_prep.arrow_lists import float_values, is_list, is_numeric, list_parts
from data_prep.corpus import CorpusEntry
from data_prep.frequency import canonical_freq
from data_prep.readers.errors import DataFormatError
from data_prep.series import Series

COVARIATES = ("past_feat_dynamic_real", "feat_dynamic_real")
KNOWN = ("start", "target", "item_id", "freq", *COVARIATES)


def parse_spec(spec: str) -> tuple[str, str | None]:
    """`GLOB@FREQ` → (glob, freq); `GLOB` → (glob, None)."""
    pattern, sep, freq = spec.rpartition("@")
    return (pattern, freq) if sep and freq and "/" not in freq else (spec, None)


def matching_files(spec: str) -> list[tuple[str, Path]]:
    """(dataset name = file stem, file) of every file the glob matches, in path order."""
    pattern, _ = parse_spec(spec)
    files = sorted(Path(p) for p in glob.glob(pattern) if Path(p).is_file())
    if not files:
        raise DataFormatError(pattern, "no file matches")
    return [(f.stem, f) for f in files]


def _batches(file: Path) -> Iterator[pa.RecordBatch]:
    """Record batches of an Arrow IPC file, or else stream; DataFormatError when it is neither."""
    with pa.memory_map(str(file)) as source:
        try:
            reader = pa.ipc.open_file(source)
            batches: Iterator[pa.RecordBatch] = (reader.get_batch(i) for i in range(reader.num_record_batches))
            schema = reader.schema
        except pa.ArrowInvalid:
            source.seek(0)
            try:
                stream = pa.ipc.open_stream(source)
            except pa.ArrowInvalid as err:
                raise DataFormatError(file, f"not an Arrow IPC file or stream ({err})") from None
            batches, schema = iter(stream), stream.schema
        _check_schema(schema, file)
        yield from batches


def _check_schema(schema: pa.Schema, file: Path) -> None:
    names = [n for n in schema.names if not n.endswith("._np_shape")]
    unknown = [n for n in names if n not in KNOWN and not n.startswith("feat_static")]
    if unknown:
        raise DataFormatError(file, f"unknown column {unknown[0]!r} (a GluonTS Arrow file has {', '.join(KNOWN)})")
    for name in ("start", "target"):
        if name not in schema.names:
            raise DataFormatError(file, f"no {name!r} column (has {', '.join(schema.names)})")
    for name in ("target", *COVARIATES):
        if name in schema.names:
            kind = schema.field(name).type
            inner = kind.value_type if is_list(kind) else None
            leaf = inner.value_type if inner is not None and is_list(inner) else inner
            if leaf is None or not is_numeric(leaf):
                raise DataFormatError(file, f"column {name!r} must hold lists of numbers, got {kind}")


def _arrays(batch: pa.RecordBatch, name: str, r: int, file: Path, line: int) -> list[np.ndarray]:
    """Row r of column `name` as its variates: [values] for 1-D, D arrays for a 2-D array (either encoding)."""
    column = batch.column(name)
    if not column[r].is_valid:
        raise DataFormatError(file, f"row {line}: {name} is null")
    child, offsets = list_parts(column.slice(r, 1))
    part = child.slice(int(offsets[0]), int(offsets[1] - offsets[0]))
    if is_list(part.type):  # a list of D lists
        leaf, inner = list_parts(part)
        lengths = np.diff(inner)
        if len(set(lengths.tolist())) > 1:
            raise DataFormatError(file, f"row {line}: ragged variates in {name}: lengths {lengths.tolist()[:8]}")
        values = float_values(leaf.slice(int(inner[0]), int(inner[-1] - inner[0])))
        return list(values.reshape(len(lengths), -1)) if len(lengths) else []
    values = float_values(part)
    shape_col = f"{name}._np_shape"
    if shape_col in batch.schema.names and batch.column(shape_col)[r].is_valid:
        shape = batch.column(shape_col)[r].as_py()
        if len(shape) == 2 and shape[0] * shape[1] == len(values):
            return list(values.reshape(shape))
        if not (len(shape) == 1 and shape[0] == len(values)):
            raise DataFormatError(file, f"row {line}: {shape_col} {shape} does not fit {len(values)} values")
    return [values]


def read_file(file: Path, dataset: str, spec_freq: str | None) -> Iterator[CorpusEntry]:
    """Corpus entries of one GluonTS Arrow file, one record batch at a time (see the module docstring)."""
    line = 0
    for batch in _batches(file):
        names = batch.schema.names
        items = batch.column("item_id").to_pylist() if "item_id" in names else [None] * batch.num_rows
        freqs = batch.column("freq").to_pylist() if "freq" in names else [spec_freq] * batch.num_rows
        starts = batch.column("start").to_pylist()
        for r in range(batch.num_rows):
            line += 1
            item = str(items[r]) if items[r] is not None else f"{dataset}/{line - 1}"
            if freqs[r] is None:
                raise DataFormatError(file, "no 'freq' column: GluonTS Arrow files do not store the frequency; give "
                                            "it in the source, e.g. --source 'gluonts:PATH@h'")
            try:
                freq = canonical_freq(freqs[r], str(file))
            except ValueError:
                raise DataFormatError(file, f"row {line}: frequency {freqs[r]!r} is not a pandas alias") from None
            start = None if starts[r] is None else pd.Timestamp(starts[r])
            targets = _arrays(batch, "target", r, file, line)
            covariates = [c for name in COVARIATES if name in names for c in _arrays(batch, name, r, file, line)]
            length = len(targets[0]) if targets else 0
            if any(len(c) != length for c in covariates):
                raise DataFormatError(file, f"row {line} (item {item!r}): a covariate's length differs from the "
                                            f"target's {length}")
            group = item if len(targets) > 1 or covariates else None
            for v, values in enumerate(targets):
                name = f"{item}/{v}" if len(targets) > 1 else item
                yield CorpusEntry(Series(name, values, freq, start, dataset, group), name, 0, len(values), v, False)
            for k, values in enumerate(covariates):
                name = f"{item}/covariate/{k}"
                yield CorpusEntry(Series(name, values, freq, start, dataset, group), name, 0, len(values), k, True)
    if line == 0:
        raise DataFormatError(file, "empty file: no rows")
