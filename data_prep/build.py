"""The steps `moe-ts prepare` builds a corpus with (data_prep/prepare.py is the command): the entries of the
registered datasets, the `--source` datasets (read by `--num-proc` processes into parts, `write_in_parts`) and the
synthetic generators, with what each contributed (`SourceStats`); the decontamination that cuts every copy of an
evaluation test window; TSMixup from the decontaminated real rows, read memory-mapped; and the rewrite those two
use. docs/ARCHITECTURE.md §4.
"""
from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from data_prep.corpus import (SHARD_SIZE, Corpus, CorpusEntry, cut_series, load_corpus_dataset, save_dataset,
                              write_corpus)
from data_prep.series import Series
from data_prep.synthetic import generate_kernelsynth, generate_periodic, generate_random_walks, generate_synthetic
from data_prep.synthetic_multivariate import generate_multivariate_groups

MIN_LENGTH = 2  # a cut series shorter than this carries nothing to learn from and is dropped
SYNTHETIC_SOURCES = ("synthetic", "kernelsynth", "periodic", "random_walk", "tsmixup", "multivariate")  # corpus datasets that are not real data


@dataclass
class SourceStats:
    """What one source contributed."""

    name: str
    series: int = 0
    points: int = 0
    dropped_short: int = 0
    covariates: int = 0  # of `series`: covariate rows (stored, never training targets)
    note: str = ""
    spans: list[tuple[str, int, int, int]] = field(default_factory=list)  # (item_id, span_start, span_end, source length)


def real_entries(names: list[str], data_dir: Path, exclude_eval: bool, max_series: int | None,
                  stats: list[SourceStats]) -> Iterator[CorpusEntry]:
    from data_prep.registry import available, get_spec, held_out_reason, load_series, test_span

    from tqdm import tqdm

    for name in tqdm(names, desc="prepare: real datasets", unit="dataset", disable=None):
        spec = get_spec(name)
        st = SourceStats(spec.name)
        stats.append(st)
        if not available(spec, data_dir):
            st.note = "missing files: skipped"
            continue
        reason = held_out_reason(spec) if exclude_eval else None
        if reason:
            st.note = reason
            continue
        for s in load_series(spec, data_dir, max_series=max_series):
            end = test_span(spec, len(s))[0] if exclude_eval else len(s)
            if end < MIN_LENGTH:
                st.dropped_short += 1
                continue
            entry = cut_series(s, 0, end)
            st.series += 1
            st.points += end
            st.spans.append((s.item_id, 0, end, len(s)))
            yield entry
        st.note = "test spans cut away" if exclude_eval else "full series (evaluation data INCLUDED)"


def ingested_entries(found: list, stats: list[SourceStats], read: Any = None) -> Iterator[CorpusEntry]:
    """Entries of every `--source` dataset (`read(ds)`, default data_prep.readers.ingest.read_dataset), series
    shorter than MIN_LENGTH dropped."""
    from data_prep.readers.ingest import read_dataset

    for ds in found:
        st = SourceStats(ds.name, note=f"from {ds.source.kind}:{ds.source.path}")
        stats.append(st)
        for entry in (read or read_dataset)(ds):
            if len(entry.series) < MIN_LENGTH:
                st.dropped_short += 1
                continue
            st.series += 1
            st.points += len(entry.series)
            st.covariates += int(entry.covariate)
            yield entry


def _read_unit(task: tuple[Any, Path, Path]) -> tuple[Path, int, list[SourceStats]]:
    """Write the entries of one source file (`data_prep.readers.ingest.read_unit`) into a part of the corpus;
    returns the part's folder, its rows and what it contributed (run in a worker process by --num-proc)."""
    from data_prep.readers.ingest import read_unit

    ds, file, part = task
    stats: list[SourceStats] = []
    rows = write_corpus(ingested_entries([ds], stats, lambda _: read_unit(ds, file)), part, row_stats=False)
    return part, rows, stats


def write_in_parts(staging: Path, names: list[str], data_dir: Path, args: argparse.Namespace, found: list,
                    stats: list[SourceStats]) -> int:
    """The corpus written as parts, then concatenated into `staging` in the order of a single stream (registered
    datasets, each source file in turn, synthetic series), so the rows do not depend on --num-proc. The source
    files are read by `args.num_proc` processes; each holds one file's batch at a time."""
    import datasets
    from multiprocessing import get_context

    from data_prep.readers.ingest import read_units

    parts_dir = staging.with_name(staging.name + ".parts")
    parts_dir.mkdir()
    try:
        head = write_corpus(real_entries(names, data_dir, args.exclude_eval, args.max_series_per_dataset, stats),
                            parts_dir / "registered", row_stats=False)
        tasks = [(ds, file, parts_dir / f"source-{i:06d}")
                 for i, (ds, file) in enumerate((ds, f) for ds in found for f in read_units(ds))]
        if args.num_proc > 1 and len(tasks) > 1:
            with get_context("spawn").Pool(min(args.num_proc, len(tasks))) as pool:
                done = list(pool.imap(_read_unit, tasks))
        else:
            done = [_read_unit(task) for task in tasks]
        _merge_stats(stats, [st for _, _, part_stats in done for st in part_stats])
        tail = write_corpus(synthetic_entries(args.synthetic_count, args.kernelsynth_count, args.kernelsynth_length,
                                               args.periodic_count, args.random_walk_count, args.seed, stats,
                                               getattr(args, "multivariate_count", 0)),
                            parts_dir / "synthetic", row_stats=False)
        parts = ([parts_dir / "registered"] if head else []) + [part for part, rows, _ in done if rows] \
            + ([parts_dir / "synthetic"] if tail else [])
        if not parts:
            return 0
        merged = datasets.concatenate_datasets([load_corpus_dataset(part) for part in parts])
        save_dataset(merged, staging, args.max_shard_size)
        return len(merged)
    finally:
        shutil.rmtree(parts_dir, ignore_errors=True)


def _merge_stats(stats: list[SourceStats], parts: list[SourceStats]) -> None:
    """Append the per-file stats of the source datasets to `stats`, one entry per dataset."""
    by_name: dict[str, SourceStats] = {}
    for st in parts:
        into = by_name.get(st.name)
        if into is None:
            by_name[st.name] = into = SourceStats(st.name, note=st.note)
            stats.append(into)
        into.series += st.series
        into.points += st.points
        into.dropped_short += st.dropped_short
        into.covariates += st.covariates


def synthetic_entries(synthetic: int, kernelsynth: int, ks_length: int, periodic: int, random_walk: int, seed: int,
                       stats: list[SourceStats], multivariate: int = 0) -> Iterator[CorpusEntry]:
    """Entries of the synthetic generators, then `multivariate` synthetic groups (data_prep.synthetic_multivariate),
    each variate a row with its `variate` index and the group's group_id."""
    for name, count, series in (("synthetic", synthetic, lambda: generate_synthetic(synthetic, seed=seed)),
                                ("kernelsynth", kernelsynth, lambda: generate_kernelsynth(kernelsynth, seed=seed, length=ks_length)),
                                ("periodic", periodic, lambda: generate_periodic(periodic, seed=seed)),
                                ("random_walk", random_walk, lambda: generate_random_walks(random_walk, seed=seed))):
        if name in ("periodic", "random_walk") and count == 0:  # keeps corpora built before these generators unchanged
            continue
        st = SourceStats(name, note=f"seed {seed}")
        stats.append(st)
        for s in series():
            st.series += 1
            st.points += len(s)
            yield CorpusEntry(s, s.item_id, 0, len(s))
    if multivariate:  # none by default: keeps corpora built before this generator unchanged
        st = SourceStats("multivariate", note=f"seed {seed}, {multivariate} groups of 2-8 related variates")
        stats.append(st)
        for group in generate_multivariate_groups(multivariate, seed=seed):
            for v, s in enumerate(group):
                st.series += 1
                st.points += len(s)
                yield CorpusEntry(s, s.item_id, 0, len(s), variate=v)


def decontaminate(out: Path, data_dir: Path, stats: list[SourceStats], max_shard_size: str | int = SHARD_SIZE) -> list[dict]:
    """Run the leak check on the written corpus and cut every corpus row just before the first copy of an
    evaluation test window it holds (real data has cross-series duplicates, e.g. M1 MNM44 holds MNM46's test
    values). Rewrites the corpus in place; returns what was cut. Raises if a second check still finds a leak."""
    from data_prep.leak_check import check_corpus

    report = check_corpus(out, data_dir)
    if report.ok:
        return []
    first: dict[int, tuple[int, str]] = {}
    for leak in report.leaks:
        if leak.corpus_row not in first or leak.corpus_offset < first[leak.corpus_row][0]:
            first[leak.corpus_row] = (leak.corpus_offset, f"{leak.eval_dataset}/{leak.eval_item_id}")
    corpus = load_corpus_dataset(out)
    cuts: list[dict] = []
    by_name = {st.name: st for st in stats}
    fixed: list[CorpusEntry] = []
    for i in sorted(first):
        row = corpus[i]
        offset, what = first[i]
        series = Series(item_id=row["item_id"], target=row["target"], freq=row["freq"], start=row["start"],
                        dataset=row["dataset"], group_id=row["group_id"] or None)
        cuts.append({"dataset": row["dataset"], "item_id": row["item_id"], "kept": offset, "of": len(series),
                     "reason": f"holds a copy of the test window of {what}"})
        st = by_name.get(row["dataset"])
        if st is not None:
            st.points -= len(series) - offset
            st.spans = [(it, a, a + offset if it == row["source_item_id"] else b, n) for it, a, b, n in st.spans]
        if offset < MIN_LENGTH:
            if st is not None:
                st.series -= 1
                st.dropped_short += 1
            continue
        piece = cut_series(series, 0, offset).series
        fixed.append(CorpusEntry(piece, row["source_item_id"], row["span_start"], row["span_start"] + offset,
                                 row.get("variate", 0), row.get("covariate", False)))
    keep = [i for i in range(len(corpus)) if i not in first]
    rewrite_with(out, fixed, keep=keep, max_shard_size=max_shard_size)
    again = check_corpus(out, data_dir)
    if not again.ok:
        raise RuntimeError(f"corpus {out} still leaks after decontamination:\n{again.summary()}")
    return cuts


def rewrite_with(out: Path, extra: Iterable[CorpusEntry | Series], keep: list[int] | None = None,
                  max_shard_size: str | int = SHARD_SIZE) -> int:
    """Replace the corpus at `out` by its rows `keep` (all when None) followed by `extra`; returns rows added."""
    import datasets

    patch = out.with_name(out.name + ".patch")
    tmp = out.with_name(out.name + ".rewritten")
    added = write_corpus(extra, patch, row_stats=False)
    corpus = load_corpus_dataset(out)
    kept = corpus if keep is None else corpus.select(keep)
    merged = datasets.concatenate_datasets([kept, load_corpus_dataset(patch)])
    save_dataset(merged, tmp, max_shard_size)
    del corpus, kept, merged
    shutil.rmtree(out)
    shutil.rmtree(patch)
    tmp.rename(out)  # no row statistics yet: `_build` writes them once, after the last rewrite
    return added


class _CorpusRows(Sequence):
    """Targets of some rows of a memory-mapped corpus, read on demand (float32 views, nothing copied)."""

    def __init__(self, corpus: Corpus, rows: np.ndarray) -> None:
        self.corpus, self.rows = corpus, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.corpus.values(int(self.rows[i]))


class _ColumnRows(Sequence):
    """One string column of some corpus rows, read on demand."""

    def __init__(self, column: Any, rows: np.ndarray) -> None:
        self.column, self.rows = column, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> str:
        return self.column[int(self.rows[i])].as_py()


def add_tsmixup(out: Path, count: int, seed: int, stats: list[SourceStats], max_shard_size: str | int = SHARD_SIZE) -> int:
    """Append `count` TSMixup series (data_prep.tsmixup) mixed from the corpus' real rows; returns rows added.
    The real rows are read memory-mapped, one window at a time: memory does not grow with the corpus."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from data_prep.corpus import _training_table, open_corpus
    from data_prep.tsmixup import DATASET, MIN_LENGTH as MIX_MIN_LENGTH, generate_tsmixup

    corpus = open_corpus(out)
    table = _training_table(out)
    real = ~pc.is_in(table.column("dataset"), value_set=pa.array(list(SYNTHETIC_SOURCES))).to_numpy(
        zero_copy_only=False)
    if corpus.covariate is not None:
        real &= ~corpus.covariate
    candidates = int(real.sum())
    rows = np.flatnonzero(real & (corpus.lengths >= MIX_MIN_LENGTH))
    st = SourceStats(DATASET)
    stats.append(st)
    if count and not len(rows):
        longest = int(corpus.lengths[real].max()) if candidates else 0
        raise SystemExit(f"{out.name}: tsmixup: no real series of at least {MIX_MIN_LENGTH} points to mix "
                         f"({candidates} candidates, longest {longest}); pass --tsmixup-count 0 to build the corpus "
                         f"without mixes")
    mixed = list(generate_tsmixup(_CorpusRows(corpus, rows), _ColumnRows(table.column("freq"), rows), count,
                                  seed=seed))
    del corpus, table  # memory-mapped from `out`, which _rewrite_with replaces
    st.series, st.points = len(mixed), sum(len(s) for s in mixed)
    st.note = f"seed {seed}, mixed from {len(rows)} real series"
    return rewrite_with(out, mixed, max_shard_size=max_shard_size)
