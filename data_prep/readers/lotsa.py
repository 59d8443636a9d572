"""LOTSA / GIFT-Eval layout (`datasets.save_to_disk` folders; ../shared/DATA_SOURCES.md has the columns).

One folder per dataset holding `state.json` and Arrow stream shards; a root may be one such folder or a tree of
them (LOTSA: one per dataset; GIFT-Eval: `ett1/D`), each a corpus dataset named by its path under the root.
Columns: item_id, start (timestamp[s], 1970-01-01 = unknown), freq (pandas alias), target (list of float32, or D
lists variate-major [D][T]) and optionally past_feat_dynamic_real (covariates, same shapes). A row becomes one
corpus entry per variate (group_id = item_id, variate = its index) and one covariate entry per covariate
(covariate=True: kept, never a training target). Shards are read as Arrow streams one record batch at a time.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa

from data_prep.corpus import CorpusEntry
from data_prep.frequency import canonical_freq
from data_prep.arrow_lists import float_values, is_list, is_numeric, list_parts
from data_prep.readers.errors import DataFormatError
from data_prep.series import Series

COLUMNS = ("item_id", "start", "freq", "target", "past_feat_dynamic_real")
REQUIRED = ("item_id", "start", "freq", "target")
MISSING_START = pd.Timestamp("1970-01-01")


def dataset_folders(root: str | Path) -> list[tuple[str, Path]]:
    """(dataset name, folder) of the save_to_disk folder `root` or of every one below it, in path order."""
    root = Path(root)
    if (root / "state.json").is_file():
        return [(root.name, root)]
    if not root.is_dir():
        raise DataFormatError(root, "no such folder")
    found = sorted(p.parent for p in root.rglob("state.json"))
    if not found:
        raise DataFormatError(root, "no datasets.save_to_disk folder (state.json) in or below it")
    return [("/".join(p.relative_to(root).parts), p) for p in found]


def shard_files(folder: Path) -> list[Path]:
    """The Arrow shards state.json lists, each checked to exist."""
    try:
        state = json.loads((folder / "state.json").read_text())
        files = [folder / entry["filename"] for entry in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataFormatError(folder / "state.json", f"not a datasets.save_to_disk state file ({err})") from None
    for file in files:
        if not file.is_file():
            raise DataFormatError(file, "shard listed in state.json is missing")
    if not files:
        raise DataFormatError(folder / "state.json", "lists no data shard")
    return files


def check_schema(schema: pa.Schema, file: Path) -> None:
    """DataFormatError naming an unknown or missing column, or a target/covariate that is not numeric lists."""
    for name in schema.names:
        if name not in COLUMNS:
            raise DataFormatError(file, f"unknown feature column {name!r} (the LOTSA layout has {', '.join(COLUMNS)})")
    for name in REQUIRED:
        if name not in schema.names:
            raise DataFormatError(file, f"no {name!r} column (has {', '.join(schema.names)})")
    for name in ("target", "past_feat_dynamic_real"):
        if name not in schema.names:
            continue
        kind = schema.field(name).type
        inner = kind.value_type if is_list(kind) else None
        leaf = inner.value_type if inner is not None and is_list(inner) else inner
        if leaf is None or not is_numeric(leaf):
            raise DataFormatError(file, f"column {name!r} must be a sequence of numbers or of D sequences, got {kind}")


def _variates(array: pa.Array, row: int, item: str, name: str, file: Path, line: int) -> list[np.ndarray]:
    """The variates of one row of a (possibly nested) list column: [values] or D equal-length arrays."""
    one = array.slice(row, 1)
    if one.null_count:
        raise DataFormatError(file, f"row {line} (item {item!r}): {name} is null")
    child, offsets = list_parts(one)
    if not is_list(child.type):
        return [float_values(child.slice(int(offsets[0]), int(offsets[1] - offsets[0])))]
    rows = child.slice(int(offsets[0]), int(offsets[1] - offsets[0]))
    leaf, inner = list_parts(rows)
    lengths = np.diff(inner)
    if len(set(lengths.tolist())) > 1:
        raise DataFormatError(file, f"row {line} (item {item!r}): ragged variates in {name}: lengths "
                                    f"{lengths.tolist()[:8]} (variate-major [D][T] needs one length)")
    values = float_values(leaf.slice(int(inner[0]), int(inner[-1] - inner[0])))
    return list(values.reshape(len(lengths), -1)) if len(lengths) else []


def _start(value: object) -> pd.Timestamp | None:
    if value is None:
        return None
    stamp = pd.Timestamp(value)
    return None if stamp == MISSING_START else stamp


def read_shard(file: Path, dataset: str) -> Iterator[CorpusEntry]:
    """Corpus entries of one Arrow stream shard of a save_to_disk folder, one record batch at a time (rows are
    numbered from 1 in each shard, as errors name them)."""
    line = 0
    with pa.memory_map(str(file)) as source:
        try:
            reader = pa.ipc.open_stream(source)
        except pa.ArrowInvalid as err:
            raise DataFormatError(file, f"not an Arrow stream ({err})") from None
        check_schema(reader.schema, file)
        for batch in reader:
            columns = {name: batch.column(name) for name in batch.schema.names}
            items = columns["item_id"].to_pylist()
            freqs = columns["freq"].to_pylist()
            starts = columns["start"].to_pylist()
            for r, item in enumerate(items):
                line += 1
                yield from _row_entries(columns, r, str(item), freqs[r], _start(starts[r]), dataset, file, line)
    if line == 0:
        raise DataFormatError(file, "empty shard: no rows")


def _row_entries(columns: dict[str, pa.Array], r: int, item: str, freq: object, start: pd.Timestamp | None,
                 dataset: str, file: Path, line: int) -> Iterator[CorpusEntry]:
    """The target variates then the covariates of row `r`."""
    try:
        canon = canonical_freq(freq, f"{file}")
    except ValueError:
        raise DataFormatError(file, f"row {line} (item {item!r}): frequency {freq!r} is not a pandas alias") from None
    targets = _variates(columns["target"], r, item, "target", file, line)
    covariates = []
    if "past_feat_dynamic_real" in columns and columns["past_feat_dynamic_real"][r].is_valid:
        covariates = _variates(columns["past_feat_dynamic_real"], r, item, "past_feat_dynamic_real", file, line)
    length = len(targets[0]) if targets else 0
    bad = next((len(c) for c in covariates if len(c) != length), None)
    if bad is not None:
        raise DataFormatError(file, f"row {line} (item {item!r}): past_feat_dynamic_real has {bad} steps, "
                                    f"target {length}")
    nested = is_list(columns["target"].type.value_type)
    grouped = nested or bool(covariates)
    group = item if grouped else None
    for v, values in enumerate(targets):
        name = f"{item}/{v}" if nested else item
        yield CorpusEntry(Series(name, values, canon, start, dataset, group), name, 0, len(values), v, False)
    for k, values in enumerate(covariates):
        name = f"{item}/past_feat_dynamic_real/{k}"
        yield CorpusEntry(Series(name, values, canon, start, dataset, group), name, 0, len(values), k, True)
