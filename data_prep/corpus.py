"""The pretraining corpus contract: what `moe-ts prepare` writes and what training reads (docs/ARCHITECTURE.md §4).

A corpus is a folder holding one Arrow dataset (datasets.save_to_disk), one row per univariate series, and a
manifest.json written last with `"complete": true`; a folder without it is an interrupted or foreign build and
may still hold evaluation test windows, so training refuses it (`check_manifest`).

Schema (`SCHEMA`): item_id, dataset, freq (pandas alias), start (timestamp[s], null when unknown), target
(list<float32>, NaN = missing), group_id ("" when none), and provenance: source_item_id plus span_start /
span_end, the [start, end) slice of the source series that went in.

Two readers: `load_corpus_dataset` (the datasets.Dataset with every column, for building and the leak check)
and `open_corpus` (the memory-mapped `Corpus` of targets, datasets and item ids that training samples from).
`datasets` and pandas are imported where used: the training side loads without them.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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
}
TRAINING_COLUMNS = ("item_id", "dataset", "target")  # all `open_corpus` needs (a corpus built by other means)
BUILD_PREFIX = ".corpus-build-"  # + the corpus folder's name: Arrow cache of a write in progress
MANIFEST = "manifest.json"


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
        }


def write_corpus(entries: Iterable[Series | CorpusEntry], path: str | os.PathLike[str], fingerprint: str | None = None) -> int:
    """Stream entries into an Arrow dataset at `path` (replaced if it exists); returns the row count.
    Rows go through Dataset.from_generator, which writes Arrow batches to a temporary cache, so memory stays low."""
    import datasets

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
        dataset.save_to_disk(str(path))
        return len(dataset)
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()
        shutil.rmtree(tmp, ignore_errors=True)


def write_manifest(folder: Path, settings: dict[str, Any], rows: int, points: int, decontaminated: list[dict],
                   sources: list[dict]) -> Path:
    """Write `folder`/manifest.json marking the corpus complete: the build's `settings`, then what it holds.
    `moe-ts prepare` calls it last, once every row is written (the order of keys is that of earlier manifests)."""
    manifest = {**settings, "rows": rows, "complete": True, "points": points, "decontaminated": decontaminated,
                "sources": sources}
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
    return data


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
    missing = set(SCHEMA) - set(dataset.column_names)
    if missing:
        raise ValueError(f"{path}: not a moe-ts corpus, missing columns {sorted(missing)}")
    return dataset


def target_arrays(corpus: datasets.Dataset) -> list[np.ndarray]:
    """Every row's target as a float64 array, read from the Arrow column (row-by-row formatting is ~20x slower)."""
    targets = corpus.data.table.column("target").combine_chunks()
    lengths = targets.value_lengths().to_numpy(zero_copy_only=False)
    values = targets.flatten().to_numpy(zero_copy_only=False).astype(np.float64)
    return np.split(values, np.cumsum(lengths)[:-1])


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
    dataset: np.ndarray  # [R] dataset name per series (object array of str)
    item_id: np.ndarray  # [R] item id per series (object array of str)

    def __len__(self) -> int:
        return len(self.lengths)

    def values(self, row: int) -> np.ndarray:
        """The target of series `row` (a view into the memory-mapped data; NaN = missing)."""
        c = int(np.searchsorted(self.chunk_first_row, row, side="right")) - 1
        local = row - int(self.chunk_first_row[c])
        off = self.chunk_offsets[c]
        return self.chunk_values[c][off[local]:off[local + 1]]


def _chunk_arrays(chunk: pa.Array, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Flat float32 values and offsets of one list-typed Arrow chunk; null values become NaN."""
    if not (pa.types.is_list(chunk.type) or pa.types.is_large_list(chunk.type)):
        raise CorpusError(f"{path}: column 'target' must be a list of floats, got {chunk.type}")
    values = chunk.values
    if not pa.types.is_floating(values.type) and not pa.types.is_integer(values.type):
        raise CorpusError(f"{path}: column 'target' must hold numbers, got {values.type}")
    if values.null_count:
        values = pc.fill_null(values.cast(pa.float32()), float("nan"))
    if values.type != pa.float32():
        values = values.cast(pa.float32())
    return values.to_numpy(zero_copy_only=False), chunk.offsets.to_numpy().astype(np.int64)


def _training_table(path: Path) -> pa.Table:
    """The Arrow table of the corpus at `path` (selected rows materialised); CorpusError when unusable."""
    import datasets

    if not path.exists():
        raise CorpusError(f"{path}: corpus directory not found (build one with `moe-ts prepare --out {path}`)")
    state = path / "state.json"
    if state.is_file() and json.loads(state.read_text()).get("_data_files") == []:  # datasets cannot load 0 shards
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
    if len(ds) == 0:
        raise CorpusError(f"{path}: corpus is empty (0 series)")
    table = ds.data.table
    if ds._indices is not None:  # a selected/shuffled view: materialise the selected rows
        table = table.take(ds._indices.column(0))
    return table


def open_corpus(path: str | Path) -> Corpus:
    """The memory-mapped training view of the corpus at `path` (nothing copied); CorpusError when unusable.
    Reads the Arrow data only: call `check_manifest` too where the corpus must be a finished build."""
    path = Path(path)
    table = _training_table(path)
    target_col = table.column("target")
    if target_col.null_count:
        first = pc.index(pc.is_null(target_col), True).as_py()
        raise CorpusError(f"{path}: series {table.column('item_id')[first].as_py()!r} (row {first}) has a null "
                          f"target; store an empty or all-NaN list instead")
    chunk_values, chunk_offsets, firsts, lengths, observed = [], [], [], [], []
    row = 0
    for chunk in target_col.chunks:
        vals, offs = _chunk_arrays(chunk, path)
        chunk_values.append(vals)
        chunk_offsets.append(offs)
        firsts.append(row)
        row += len(offs) - 1
        lengths.append(np.diff(offs))
        csum = np.concatenate([[0], np.cumsum(~np.isnan(vals), dtype=np.int64)])
        observed.append(csum[offs[1:]] - csum[offs[:-1]])
    return Corpus(
        path=path,
        chunk_values=chunk_values,
        chunk_offsets=chunk_offsets,
        chunk_first_row=np.asarray(firsts, dtype=np.int64),
        lengths=np.concatenate(lengths).astype(np.int64),
        n_observed=np.concatenate(observed).astype(np.int64),
        dataset=np.asarray(table.column("dataset").to_pylist(), dtype=object),
        item_id=np.asarray(table.column("item_id").to_pylist(), dtype=object),
    )
