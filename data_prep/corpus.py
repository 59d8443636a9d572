"""The pretraining corpus contract: what `moe-ts prepare` writes and what training reads (docs/ARCHITECTURE.md §4).

A corpus is a folder holding one Arrow dataset (datasets.save_to_disk), one row per univariate series, and a
manifest.json written last with `"complete": true`; a folder without it is an interrupted or foreign build and
may still hold evaluation test windows, so training refuses it (`check_manifest`).

Schema (`SCHEMA`): item_id, dataset, freq (pandas alias), start (timestamp[s], null when unknown), target
(list<float32>, NaN = missing), group_id ("" when none), and provenance: source_item_id plus span_start /
span_end, the [start, end) slice of the source series that went in. Added later (`LATER_COLUMNS`, with the
values a corpus written before them means): variate (the row's index inside its multivariate group, 0 for a
univariate series) and covariate (true for a covariate row, e.g. LOTSA's past_feat_dynamic_real: stored and
leak-checked like any row, never drawn as a training target). docs/ARCHITECTURE.md §4.

Two readers: `load_corpus_dataset` (the datasets.Dataset with every column, for building and the leak check)
and `open_corpus` (the memory-mapped `Corpus` of targets, datasets and item ids that training samples from).
Per-row statistics (`ROW_STATS`: lengths, observed counts, dataset codes and names) are computed once when the
corpus is written (`write_row_stats`), so `open_corpus` starts without reading a value; a corpus without that
side file, or with a stale one, is scanned instead (docs/ARCHITECTURE.md §4).
`datasets` and pandas are imported where used: the training side loads without them.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data_prep.arrow_lists import float_values, is_numeric, list_parts

if TYPE_CHECKING:
    import datasets

    from data_prep.series import Series

SCHEMA = {  # column -> Arrow value type of the corpus dataset (`features()` gives the datasets.Features)
    "item_id": "string",
    "dataset": "string",
    "freq": "string",
    "start": "timestamp[s]",
    "target": "list<float32>",
    "group_id": "string",
    "source_item_id": "string",
    "span_start": "int64",
    "span_end": "int64",
    "variate": "int64",
    "covariate": "bool",
}
LATER_COLUMNS = {"variate": 0, "covariate": False}  # column -> its value in corpora written before it existed
TRAINING_COLUMNS = ("item_id", "dataset", "target")  # all `open_corpus` needs (a corpus built by other means)
BUILD_PREFIX = ".corpus-build-"  # + the corpus folder's name: Arrow cache of a write in progress
MANIFEST = "manifest.json"
ROW_STATS = "row_stats.npz"  # per-row statistics beside the Arrow data (`write_row_stats`, `open_corpus`)
SHARD_SIZE = "500MB"  # largest Arrow shard of a corpus (`moe-ts prepare --max-shard-size`)
SCAN_BLOCK = 1 << 22  # values per block of the observed-count scan: bounds its memory whatever the corpus size


class CorpusError(ValueError):
    """The corpus folder is missing, unreadable, empty, unfinished, or does not fit the sampling config."""


def features() -> datasets.Features:
    """`SCHEMA` as datasets.Features."""
    import datasets

    def feature(kind: str) -> Any:
        return datasets.Sequence(datasets.Value("float32")) if kind == "list<float32>" else datasets.Value(kind)

    return datasets.Features({name: feature(kind) for name, kind in SCHEMA.items()})


# --- writing -------------------------------------------------------------------------------------------------


@dataclass
class CorpusEntry:
    """A (possibly cut) series plus where it came from: target == source[span_start:span_end]."""

    series: Series
    source_item_id: str
    span_start: int
    span_end: int
    variate: int = 0  # index inside its multivariate group (group_id), 0 for a univariate series
    covariate: bool = False  # a covariate: stored, never a training target


def cut_series(series: Series, start: int, end: int) -> CorpusEntry:
    """Slice [start, end) of a series, shifting its start timestamp by `start` steps."""
    import pandas as pd

    from data_prep.series import Series

    if not 0 <= start < end <= len(series):
        raise ValueError(f"series {series.item_id!r}: bad span [{start}, {end}) for length {len(series)}")
    new_start = series.start
    if new_start is not None and start > 0:
        new_start = pd.Timestamp(new_start) + start * pd.tseries.frequencies.to_offset(series.freq)
    piece = Series(item_id=series.item_id, target=series.target[start:end], freq=series.freq, start=new_start,
                   dataset=series.dataset, group_id=series.group_id, attributes=series.attributes)
    return CorpusEntry(piece, series.item_id, start, end)


def _as_entry(item: Series | CorpusEntry) -> CorpusEntry:
    if isinstance(item, CorpusEntry):
        return item
    return CorpusEntry(item, item.item_id, 0, len(item))


def _rows(entries: Iterable[Series | CorpusEntry]) -> Iterator[dict]:
    import pandas as pd

    for item in entries:
        e = _as_entry(item)
        s = e.series
        if len(s) == 0:
            raise ValueError(f"series {s.item_id!r} of {s.dataset!r} is empty")
        yield {
            "item_id": s.item_id,
            "dataset": s.dataset,
            "freq": s.freq,
            "start": None if s.start is None else pd.Timestamp(s.start).to_pydatetime(),
            "target": s.target.astype(np.float32, copy=False),
            "group_id": s.group_id or "",
            "source_item_id": e.source_item_id,
            "span_start": int(e.span_start),
            "span_end": int(e.span_end),
            "variate": int(e.variate),
            "covariate": bool(e.covariate),
        }


def save_dataset(dataset: datasets.Dataset, path: str | os.PathLike[str], max_shard_size: str | int = SHARD_SIZE,
                 num_proc: int | None = None) -> None:
    """`dataset.save_to_disk(path)` in Arrow shards of at most `max_shard_size` (e.g. "500MB"), quietly."""
    import datasets

    bars_were_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        dataset.save_to_disk(str(path), max_shard_size=max_shard_size, num_proc=num_proc)
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()


def shard_records(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """File name, size and SHA-256 of every Arrow shard of the corpus at `path` (the manifest's `shards`)."""
    path = Path(path)
    files = [entry["filename"] for entry in json.loads((path / "state.json").read_text()).get("_data_files", [])]
    records = []
    for name in files:
        digest = hashlib.sha256()
        with open(path / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
        records.append({"file": name, "bytes": (path / name).stat().st_size, "sha256": digest.hexdigest()})
    return records


def verify_shards(path: str | os.PathLike[str], manifest: dict[str, Any], hashes: bool = False) -> int:
    """Check the shards the manifest lists (`shards`, written by `moe-ts prepare`): present with their sizes and,
    with `hashes`, their SHA-256 (reads every byte); CorpusError naming the first bad shard. Returns the number
    checked (0 for a manifest from before shards were recorded)."""
    path = Path(path)
    shards = manifest.get("shards") or []
    fix = f"rebuild it with `moe-ts prepare --out {path}`"
    for shard in shards:
        file = path / shard["file"]
        if not file.is_file():
            raise CorpusError(f"{file}: shard listed in the manifest is missing; {fix}")
        if file.stat().st_size != shard["bytes"]:
            raise CorpusError(f"{file}: {file.stat().st_size} bytes, the manifest says {shard['bytes']} "
                              f"(truncated or replaced); {fix}")
    if hashes:
        for shard, actual in zip(shards, shard_records(path)):
            if actual["file"] != shard["file"] or actual["sha256"] != shard["sha256"]:
                raise CorpusError(f"{path / shard['file']}: SHA-256 differs from the manifest's (the file was "
                                  f"changed after `moe-ts prepare` wrote it); {fix}")
    return len(shards)


def write_corpus(entries: Iterable[Series | CorpusEntry], path: str | os.PathLike[str], fingerprint: str | None = None,
                 row_stats: bool = True, max_shard_size: str | int = SHARD_SIZE) -> int:
    """Stream entries into an Arrow dataset at `path` (replaced if it exists), in shards of at most
    `max_shard_size`; returns the row count (0, and nothing written, when there is no entry). Rows go through Dataset.from_generator, which writes Arrow batches to
    a temporary cache, so memory stays low. `row_stats=False` skips the side file (one pass over every value): for
    a writer that rewrites the corpus afterwards and calls `write_row_stats` once at the end, as `moe-ts prepare`
    does."""
    import itertools

    import datasets

    entries = iter(entries)
    first = next(entries, None)
    if first is None:  # datasets cannot build a dataset of no rows: nothing is written
        return 0
    entries = itertools.chain([first], entries)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{BUILD_PREFIX}{path.name}-", dir=path.parent))
    bars_were_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        fp = fingerprint or hashlib.sha1(f"{path}:{os.getpid()}:{id(entries)}".encode()).hexdigest()
        try:
            dataset = datasets.Dataset.from_generator(
                _rows, features=features(), cache_dir=str(tmp), gen_kwargs={"entries": iter(entries)}, fingerprint=fp
            )
        except datasets.exceptions.DatasetGenerationError as err:
            if err.__cause__ is not None:  # surface the reader's / our own error, not the builder's wrapper
                raise err.__cause__ from None
            raise
        if path.exists():
            shutil.rmtree(path)
        save_dataset(dataset, path, max_shard_size)
        if row_stats:
            write_row_stats(path)
        return len(dataset)
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()
        shutil.rmtree(tmp, ignore_errors=True)


def write_manifest(folder: Path, settings: dict[str, Any], rows: int, points: int, decontaminated: list[dict],
                   sources: list[dict], ingested: list[dict] | None = None,
                   weights: dict[str, float] | None = None, shards: list[dict] | None = None) -> Path:
    """Write `folder`/manifest.json marking the corpus complete: the build's `settings`, then what it holds.
    `moe-ts prepare` calls it last, once every row is written (the order of keys is that of earlier manifests;
    `ingested`, the upstream sources read (kind, path, rows, points), `weights`, the per-dataset sampling
    weights (`manifest_weights`), and `shards`, each Arrow file with its size and SHA-256 (`shard_records`),
    follow only when given)."""
    manifest = {**settings, "rows": rows, "complete": True, "points": points, "decontaminated": decontaminated,
                "sources": sources}
    if ingested is not None:
        manifest["ingested"] = ingested
    if weights is not None:
        manifest["weights"] = weights
    if shards is not None:
        manifest["shards"] = shards
    path = Path(folder) / MANIFEST
    path.write_text(json.dumps(manifest, indent=1))
    return path


# --- reading -------------------------------------------------------------------------------------------------


def check_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of the corpus at `path`; CorpusError naming the fix when it is missing, unreadable or does
    not mark the corpus complete. Only `"complete": true` is required, so manifests of older builds pass."""
    path = Path(path)
    manifest = path / MANIFEST
    fix = f"rebuild it with `moe-ts prepare --out {path}`, then `moe-ts check --corpus {path}`"
    if not manifest.is_file():
        raise CorpusError(f"{path}: no {MANIFEST}, so this corpus was not finished by `moe-ts prepare` "
                          f"(interrupted?) and may hold evaluation test windows; {fix}")
    try:
        data = json.loads(manifest.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CorpusError(f"{manifest}: not valid JSON ({err}); {fix}") from None
    if not isinstance(data, dict) or data.get("complete") is not True:
        raise CorpusError(f"{manifest}: does not mark the corpus complete (an interrupted or older build); {fix}")
    verify_shards(path, data)  # sizes only: a stat per shard (`moe-ts check` compares the SHA-256 too)
    return data


def read_manifest(path: str | Path) -> dict[str, Any] | None:
    """The parsed manifest of the corpus at `path` when it has a readable one (complete or not), else None."""
    try:
        data = json.loads((Path(path) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def manifest_field(path: str | Path, key: str) -> Any:
    """A field of the manifest of the corpus at `path`; None when it has none or there is no complete manifest
    (a corpus built by other means)."""
    try:
        return check_manifest(path).get(key)
    except CorpusError:
        return None


def manifest_weights(path: str | Path) -> dict[str, float] | None:
    """The per-dataset sampling weights the manifest of the corpus at `path` records (`moe-ts prepare
    --weights`), or None when it records none."""
    weights = manifest_field(path, "weights")
    return {str(k): float(v) for k, v in weights.items()} if isinstance(weights, dict) and weights else None


def corpus_fingerprint(path: str | Path) -> str:
    """SHA-256 of the manifest and the Arrow state file: changes whenever the corpus is rebuilt differently."""
    digest = hashlib.sha256()
    for name in (MANIFEST, "state.json"):
        file = Path(path) / name
        if file.is_file():
            digest.update(name.encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def load_corpus_dataset(path: str | os.PathLike[str]) -> datasets.Dataset:
    """The corpus at `path` as a datasets.Dataset with every column (memory-mapped); checks the schema's columns."""
    import datasets

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no corpus at {path}")
    dataset = datasets.load_from_disk(str(path))
    if not isinstance(dataset, datasets.Dataset):
        raise ValueError(f"{path}: expected one Dataset, found {type(dataset).__name__}")
    missing = set(SCHEMA) - set(LATER_COLUMNS) - set(dataset.column_names)
    if missing:
        raise ValueError(f"{path}: not a moe-ts corpus, missing columns {sorted(missing)}")
    return dataset


class ArrowStrings:
    """A string column of the corpus read on demand from the memory-mapped Arrow data (no per-row Python
    object until asked): `[i]` gives one str, `[rows]` (indices, a mask or a slice) an object array."""

    def __init__(self, column: pa.ChunkedArray) -> None:
        self.column = column

    def __len__(self) -> int:
        return len(self.column)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, (int, np.integer)):
            return self.column[int(index)].as_py()
        rows = np.arange(len(self))[index] if isinstance(index, slice) else np.asarray(index)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        return np.asarray(self.column.take(pa.array(rows, type=pa.int64())).to_pylist(), dtype=object)

    def tolist(self) -> list[Any]:
        """Every value as a Python list (R objects: for small corpora and tests)."""
        return self.column.to_pylist()


@dataclass
class Corpus:
    """Read-only training view of a corpus: one row per univariate series, values memory-mapped.

    Shape legend: R corpus rows (series)."""

    path: Path
    chunk_values: list[np.ndarray]  # flat float32 values of each Arrow chunk of `target`
    chunk_offsets: list[np.ndarray]  # list offsets of each chunk, into its chunk_values
    chunk_first_row: np.ndarray  # [num_chunks] global row index of each chunk's first row
    lengths: np.ndarray  # [R] int64 series lengths
    n_observed: np.ndarray  # [R] int64 non-NaN values per series
    dataset_index: np.ndarray  # [R] int32 index of each series' dataset in dataset_names
    dataset_names: list[str]  # the corpus' dataset names, sorted
    item_id: ArrowStrings  # [R] item id per series, read on demand
    covariate: np.ndarray | None = None  # [R] bool, True = covariate row (never sampled); None: no such rows
    row_stats: str = "scan"  # where lengths / n_observed / dataset_index came from: ROW_STATS or "scan"

    def __len__(self) -> int:
        return len(self.lengths)

    @cached_property
    def dataset(self) -> np.ndarray:
        """[R] dataset name per series (object array pointing at one str per dataset; training uses dataset_index)."""
        return np.asarray(self.dataset_names, dtype=object)[self.dataset_index]

    def values(self, row: int) -> np.ndarray:
        """The target of series `row` (a view into the memory-mapped data; NaN = missing)."""
        c = int(np.searchsorted(self.chunk_first_row, row, side="right")) - 1
        local = row - int(self.chunk_first_row[c])
        off = self.chunk_offsets[c]
        return self.chunk_values[c][off[local]:off[local + 1]]


@dataclass
class RowStats:
    """Per-row statistics of a corpus (the ROW_STATS side file, or a scan of the values)."""

    lengths: np.ndarray  # [R] int64
    n_observed: np.ndarray  # [R] int64
    dataset_index: np.ndarray  # [R] int32 into dataset_names
    dataset_names: list[str]  # sorted


def _chunk_arrays(chunk: pa.Array, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Flat float32 values and offsets of one list-typed Arrow chunk; null values become NaN (a copy: corpora
    written by `write_corpus` hold NaN, not nulls, and are read without one)."""
    if not (pa.types.is_list(chunk.type) or pa.types.is_large_list(chunk.type)):
        raise CorpusError(f"{path}: column 'target' must be a list of floats, got {chunk.type}")
    if not is_numeric(chunk.type.value_type):
        raise CorpusError(f"{path}: column 'target' must hold numbers, got {chunk.type.value_type}")
    values, offsets = list_parts(chunk)
    return float_values(values), offsets


def _training_table(path: Path, allow_empty: bool = False) -> pa.Table:
    """The Arrow table of the corpus at `path` (selected rows materialised); CorpusError when unusable."""
    import datasets

    if not path.exists():
        raise CorpusError(f"{path}: corpus directory not found (build one with `moe-ts prepare --out {path}`)")
    state = path / "state.json"
    if state.is_file() and json.loads(state.read_text()).get("_data_files") == []:  # datasets cannot load 0 shards
        if allow_empty:
            return pa.table({c: pa.array([], pa.string()) for c in TRAINING_COLUMNS})
        raise CorpusError(f"{path}: corpus is empty (0 series)")
    try:
        ds = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as err:
        raise CorpusError(f"{path}: not a corpus written by datasets.save_to_disk ({err})") from err
    if not isinstance(ds, datasets.Dataset):
        raise CorpusError(f"{path}: expected one Dataset, found a {type(ds).__name__} with splits {list(ds)}")
    missing = [c for c in TRAINING_COLUMNS if c not in ds.column_names]
    if missing:
        raise CorpusError(f"{path}: corpus lacks column(s) {missing} (has {ds.column_names})")
    if len(ds) == 0 and not allow_empty:
        raise CorpusError(f"{path}: corpus is empty (0 series)")
    table = ds.data.table
    if ds._indices is not None:  # a selected/shuffled view: materialise the selected rows
        table = table.take(ds._indices.column(0))
    return table


def _observed_counts(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """[rows] non-NaN values of each row values[offsets[i]:offsets[i+1]], scanned in blocks of about SCAN_BLOCK
    values so that memory stays bounded; reads every value (the scan the ROW_STATS side file saves)."""
    n = len(offsets) - 1
    counts = np.zeros(n, dtype=np.int64)
    row = 0
    while row < n:
        end = min(max(int(np.searchsorted(offsets, offsets[row] + SCAN_BLOCK, side="right")) - 1, row + 1), n)
        lo, hi = int(offsets[row]), int(offsets[end])
        if end == row + 1 and hi - lo > SCAN_BLOCK:  # one long row: count it slice by slice
            counts[row] = sum(int(np.count_nonzero(~np.isnan(values[a:min(a + SCAN_BLOCK, hi)])))
                              for a in range(lo, hi, SCAN_BLOCK))
        elif hi > lo:
            csum = np.zeros(hi - lo + 1, dtype=np.int64)
            np.cumsum(~np.isnan(values[lo:hi]), out=csum[1:])
            local = offsets[row:end + 1] - lo
            counts[row:end] = csum[local[1:]] - csum[local[:-1]]
        row = end
    return counts


def _dataset_codes(table: pa.Table, path: Path) -> tuple[np.ndarray, list[str]]:
    """[R] int32 index of each row's dataset into the sorted dataset names, and those names (vectorised)."""
    col = table.column("dataset")
    if pa.types.is_dictionary(col.type):
        col = col.cast(pa.string())
    if col.null_count:
        raise CorpusError(f"{path}: column 'dataset' has {col.null_count} null value(s); every row needs a name")
    names = sorted(col.unique().to_pylist())
    codes = pc.index_in(col, value_set=pa.array(names, type=col.type)).to_numpy()
    return codes.astype(np.int32), names


def _scan_row_stats(table: pa.Table, chunks: list[tuple[np.ndarray, np.ndarray]], path: Path) -> RowStats:
    """Per-row statistics computed from the values themselves (touches every value once)."""
    lengths = [np.diff(offs) for _, offs in chunks]
    observed = [_observed_counts(vals, offs) for vals, offs in chunks]
    codes, names = _dataset_codes(table, path)
    return RowStats(np.concatenate(lengths).astype(np.int64), np.concatenate(observed).astype(np.int64), codes, names)


def _state_digest(path: Path) -> str:
    """SHA-256 of the Arrow state file (it names the data files and their fingerprint); "" when there is none."""
    state = path / "state.json"
    return hashlib.sha256(state.read_bytes()).hexdigest() if state.is_file() else ""


def write_row_stats(path: str | os.PathLike[str]) -> Path | None:
    """Compute the per-row statistics of the corpus at `path` once (a scan in bounded memory) and write them to
    `path`/ROW_STATS (rows, the state.json digest they belong to, lengths, n_observed, dataset_index,
    dataset_names); returns the file, or None for an empty corpus. Call it whenever the Arrow data is rewritten."""
    path = Path(path)
    table = _training_table(path, allow_empty=True)
    if len(table) == 0:
        return None
    chunks = [_chunk_arrays(c, path) for c in table.column("target").chunks]
    stats = _scan_row_stats(table, chunks, path)
    out = path / ROW_STATS
    tmp = path / f".{ROW_STATS}.tmp.npz"
    np.savez(tmp, rows=np.int64(len(table)), state_sha256=np.str_(_state_digest(path)), lengths=stats.lengths,
             n_observed=stats.n_observed, dataset_index=stats.dataset_index,
             dataset_names=np.asarray(stats.dataset_names, dtype=str))
    os.replace(tmp, out)
    return out


def _read_row_stats(path: Path, lengths: np.ndarray) -> RowStats | None:
    """The ROW_STATS side file when present and consistent with the Arrow data (row count, state.json digest,
    lengths equal to the list offsets'); None, with a one-line warning when the file is stale or unreadable."""
    file = path / ROW_STATS
    if not file.is_file():
        return None
    try:
        with np.load(file, allow_pickle=False) as z:
            rows, digest = int(z["rows"]), str(z["state_sha256"])
            stats = RowStats(z["lengths"].astype(np.int64), z["n_observed"].astype(np.int64),
                             z["dataset_index"].astype(np.int32), [str(n) for n in z["dataset_names"]])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        return _stale(file, f"unreadable ({err})")
    if rows != len(lengths) or len(stats.lengths) != rows:
        return _stale(file, f"describes {rows} rows, the Arrow data holds {len(lengths)}")
    if digest != _state_digest(path):
        return _stale(file, "was written for other Arrow data (state.json differs)")
    if not np.array_equal(stats.lengths, lengths) or len(stats.n_observed) != rows or len(stats.dataset_index) != rows:
        return _stale(file, "row lengths differ from the Arrow data")
    if rows and (stats.dataset_index.min() < 0 or stats.dataset_index.max() >= len(stats.dataset_names)):
        return _stale(file, "dataset indices out of range")
    return stats


def _stale(file: Path, problem: str) -> None:
    """Warn in one line that the side file is ignored (the values are scanned instead)."""
    warnings.warn(f"{file}: {problem}; ignored, scanning the values instead (rewrite it with "
                  f"data_prep.corpus.write_row_stats or rebuild with `moe-ts prepare`)", stacklevel=3)
    return None


def open_corpus(path: str | Path) -> Corpus:
    """The memory-mapped training view of the corpus at `path` (nothing copied); CorpusError when unusable.
    Per-row statistics come from the ROW_STATS side file when it matches the data (no value is read), else from a
    scan of the values. Reads the Arrow data only: call `check_manifest` too where the corpus must be finished."""
    path = Path(path)
    table = _training_table(path)
    target_col = table.column("target")
    if target_col.null_count:
        first = pc.index(pc.is_null(target_col), True).as_py()
        raise CorpusError(f"{path}: series {table.column('item_id')[first].as_py()!r} (row {first}) has a null "
                          f"target; store an empty or all-NaN list instead")
    chunks = [_chunk_arrays(chunk, path) for chunk in target_col.chunks]
    rows_per_chunk = [len(offs) - 1 for _, offs in chunks]
    lengths = np.concatenate([np.diff(offs) for _, offs in chunks]).astype(np.int64)
    stats = _read_row_stats(path, lengths)
    source = ROW_STATS
    if stats is None:
        stats, source = _scan_row_stats(table, chunks, path), "scan"
    return Corpus(
        path=path,
        chunk_values=[vals for vals, _ in chunks],
        chunk_offsets=[offs for _, offs in chunks],
        chunk_first_row=np.concatenate([[0], np.cumsum(rows_per_chunk)[:-1]]).astype(np.int64),
        lengths=stats.lengths,
        n_observed=stats.n_observed,
        dataset_index=stats.dataset_index,
        dataset_names=stats.dataset_names,
        item_id=ArrowStrings(table.column("item_id")),
        covariate=_covariate_mask(table),
        row_stats=source,
    )


def _covariate_mask(table: pa.Table) -> np.ndarray | None:
    """[R] bool mask of covariate rows, or None when the corpus has none (or predates the column)."""
    if "covariate" not in table.column_names:
        return None
    mask = pc.fill_null(table.column("covariate"), False).to_numpy(zero_copy_only=False).astype(bool)
    return mask if mask.any() else None
