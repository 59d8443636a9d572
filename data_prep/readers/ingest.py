"""`moe-ts prepare --source KIND:PATH`: which datasets an upstream source holds, and their corpus entries.

Kinds: `lotsa` (a datasets.save_to_disk folder or a tree of them: LOTSA, GIFT-Eval, GIFT-Eval-pretrain;
data_prep/readers/lotsa.py), `chronos` (Parquet of autogluon/chronos_datasets; data_prep/readers/chronos.py),
`parquet` / `csv` (a glob of a user's long or wide tables; data_prep/readers/frames.py), `gluonts` (a glob of
GluonTS Arrow files, `gluonts:GLOB@FREQ`; data_prep/readers/gluonts_arrow.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from data_prep.corpus import CorpusEntry
from data_prep.readers import chronos, frames, gluonts_arrow, lotsa

KINDS = ("lotsa", "chronos", "parquet", "csv", "gluonts")


@dataclass(frozen=True)
class Source:
    """One `--source KIND:PATH`."""

    kind: str
    path: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.path}"


@dataclass(frozen=True)
class SourceDataset:
    """One corpus dataset of a source: its name and the folder or files it is read from."""

    source: Source
    name: str
    files: tuple[Path, ...]


def parse_source(text: str) -> Source:
    """`KIND:PATH` as a Source; ValueError naming the kinds when KIND is unknown."""
    kind, sep, path = text.partition(":")
    if not sep or kind not in KINDS or not path:
        raise ValueError(f"--source {text!r}: expected KIND:PATH with KIND one of {', '.join(KINDS)}")
    return Source(kind, path)


def source_datasets(source: Source) -> list[SourceDataset]:
    """The datasets `source` holds (DataFormatError when there is none or the path is absent)."""
    if source.kind == "lotsa":
        return [SourceDataset(source, name, (folder,)) for name, folder in lotsa.dataset_folders(source.path)]
    if source.kind == "chronos":
        return [SourceDataset(source, name, tuple(files)) for name, files in chronos.dataset_files(source.path)]
    if source.kind == "gluonts":
        return [SourceDataset(source, name, (file,)) for name, file in gluonts_arrow.matching_files(source.path)]
    return [SourceDataset(source, name, (file,)) for name, file in frames.matching_files(source.path)]


def read_dataset(ds: SourceDataset) -> Iterator[CorpusEntry]:
    """The corpus entries of one source dataset, streamed unit by unit (DataFormatError naming the file on bad
    input)."""
    for file in read_units(ds):
        yield from read_unit(ds, file)


def read_units(ds: SourceDataset) -> list[Path]:
    """The files of `ds` that can be read apart (a LOTSA folder's Arrow shards, Chronos' Parquet files, a table):
    the units `moe-ts prepare --num-proc` spreads over processes, in the order `read_dataset` reads them."""
    if ds.source.kind == "lotsa":
        return lotsa.shard_files(ds.files[0])
    return list(ds.files)


def read_unit(ds: SourceDataset, file: Path) -> Iterator[CorpusEntry]:
    """The corpus entries of one unit (`read_units`) of `ds`."""
    if ds.source.kind == "lotsa":
        yield from lotsa.read_shard(file, ds.name)
    elif ds.source.kind == "chronos":
        yield from chronos.read_files([file], ds.name)
    elif ds.source.kind == "gluonts":
        yield from gluonts_arrow.read_file(file, ds.name, gluonts_arrow.parse_spec(ds.source.path)[1])
    else:
        yield from frames.read_file(file, ds.source.kind, ds.name)
