"""Build the pretraining corpus: real datasets available offline (evaluation test spans cut away by default) plus
seeded synthetic series, written as one Arrow dataset with a manifest.

moe-ts prepare --out CORPUS_DIR [--data-dir DIR] [--datasets a,b,... | --no-registered] [--synthetic-count N]
    [--kernelsynth-count N] [--kernelsynth-length L] [--periodic-count N] [--random-walk-count N]
    [--tsmixup-count N] [--seed S] [--exclude-eval | --include-eval] [--max-series-per-dataset N] [--overwrite]
    [--source lotsa:DIR --source chronos:PATH --source parquet:GLOB --source csv:GLOB ...] [--weights FILE]

--source adds the datasets of an upstream corpus (data_prep/readers/ingest.py: LOTSA / GIFT-Eval save_to_disk
folders, Chronos Parquet, a user's long or wide tables), streamed into the corpus beside the registered datasets
(or instead of them, --no-registered) and decontaminated like them; the manifest lists each source (`ingested`).
--weights FILE (YAML or JSON: dataset -> weight, or uni2ts' `weight_map:` of it) is recorded in the manifest
(`weights`); training multiplies each dataset's draw weight by it when the run config names no `train.mixture`
(docs/ARCHITECTURE.md §4).

With --exclude-eval (the default) every series of a registered evaluation dataset is cut to the part before its
test span (data_prep.registry.test_span), and zero-shot and LSF datasets (and any dataset sharing their files) are left out entirely (data_prep.registry.held_out_reason). --include-eval keeps
everything (for experiments, and to show the leak check catches it).

The corpus is built in a hidden sibling folder and moved to CORPUS_DIR only once its manifest.json is
written with `"complete": true`: a killed run leaves no half-made corpus (`moe-ts pretrain` refuses a
folder without a complete manifest), and its leftovers are removed by the next run. An existing CORPUS_DIR
is replaced only when moe-ts wrote it, or with --overwrite (see `moe_ts.io.output_dir`).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from data_prep.corpus import (BUILD_PREFIX, SHARD_SIZE, Corpus, CorpusEntry, cut_series, load_corpus_dataset,
                              save_dataset, shard_records, write_corpus, write_manifest, write_row_stats)
from data_prep.readers.errors import DataFormatError
from data_prep.series import Series
from data_prep.paths import resolve_data_dir
from data_prep.synthetic import generate_kernelsynth, generate_periodic, generate_random_walks, generate_synthetic
from moe_ts.io.output_dir import OutputDirError, check_output_dir, make_staging_dir, remove_leftovers, swap_in

MIN_LENGTH = 2  # a cut series shorter than this carries nothing to learn from and is dropped
SYNTHETIC_SOURCES = ("synthetic", "kernelsynth", "periodic", "random_walk", "tsmixup")  # corpus datasets that are not real data


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


def _real_entries(names: list[str], data_dir: Path, exclude_eval: bool, max_series: int | None,
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


def _ingested_entries(found: list, stats: list[SourceStats], read: Any = None) -> Iterator[CorpusEntry]:
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
    rows = write_corpus(_ingested_entries([ds], stats, lambda _: read_unit(ds, file)), part, row_stats=False)
    return part, rows, stats


def _write_in_parts(staging: Path, names: list[str], data_dir: Path, args: argparse.Namespace, found: list,
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
        head = write_corpus(_real_entries(names, data_dir, args.exclude_eval, args.max_series_per_dataset, stats),
                            parts_dir / "registered", row_stats=False)
        tasks = [(ds, file, parts_dir / f"source-{i:06d}")
                 for i, (ds, file) in enumerate((ds, f) for ds in found for f in read_units(ds))]
        if args.num_proc > 1 and len(tasks) > 1:
            with get_context("spawn").Pool(min(args.num_proc, len(tasks))) as pool:
                done = list(pool.imap(_read_unit, tasks))
        else:
            done = [_read_unit(task) for task in tasks]
        _merge_stats(stats, [st for _, _, part_stats in done for st in part_stats])
        tail = write_corpus(_synthetic_entries(args.synthetic_count, args.kernelsynth_count, args.kernelsynth_length,
                                               args.periodic_count, args.random_walk_count, args.seed, stats),
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


def find_sources(specs: list[str], taken: set[str]) -> list:
    """The datasets of every `--source` spec; SystemExit in one line when a spec or a path is bad, or a dataset
    name repeats one of `taken` (registered and synthetic datasets) or of another source."""
    from data_prep.readers.ingest import parse_source, source_datasets

    found, seen = [], {}
    for spec in specs:
        try:
            source = parse_source(spec)
            datasets = source_datasets(source)
        except (ValueError, OSError) as err:
            raise SystemExit(str(err)) from None
        for ds in datasets:
            if ds.name in taken or ds.name in seen:
                other = seen.get(ds.name, "a registered or synthetic dataset of this corpus")
                raise SystemExit(f"--source {source}: dataset {ds.name!r} is also {other}; a corpus dataset comes "
                                 f"from one place (leave one out, e.g. with --no-registered or --datasets)")
            seen[ds.name] = f"in --source {source}"
            found.append(ds)
    return found


def load_weights(path: str) -> dict[str, float]:
    """Per-dataset weights from a YAML or JSON file (a map dataset -> weight, or uni2ts' {weight_map: map});
    SystemExit in one line naming the file and the problem."""
    import math

    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise SystemExit(f"{path}: cannot read the weights ({str(err).splitlines()[0]})") from None
    if isinstance(data, dict) and isinstance(data.get("weight_map"), dict):
        data = data["weight_map"]
    if not isinstance(data, dict) or not data:
        raise SystemExit(f"{path}: weights must be a map dataset -> weight")
    weights = {}
    for name, value in data.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise SystemExit(f"{path}: weight of {name!r} must be a finite number >= 0, got {value!r}")
        weights[str(name)] = float(value)
    return weights


def _synthetic_entries(synthetic: int, kernelsynth: int, ks_length: int, periodic: int, random_walk: int, seed: int,
                       stats: list[SourceStats]) -> Iterator[CorpusEntry]:
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
    _rewrite_with(out, fixed, keep=keep, max_shard_size=max_shard_size)
    again = check_corpus(out, data_dir)
    if not again.ok:
        raise RuntimeError(f"corpus {out} still leaks after decontamination:\n{again.summary()}")
    return cuts


def _rewrite_with(out: Path, extra: Iterable[CorpusEntry | Series], keep: list[int] | None = None,
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
    return _rewrite_with(out, mixed, max_shard_size=max_shard_size)


def default_datasets(data_dir: Path) -> list[str]:
    """Every registered dataset whose files are present."""
    from data_prep.registry import all_specs, available

    return [s.name for s in all_specs() if available(s, data_dir)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moe-ts prepare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="corpus directory to write (a new, empty or moe-ts folder)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --out even when it holds files moe-ts did not write")
    parser.add_argument("--data-dir", default=None, help="benchmark data directory (default: $MOE_TS_DATA_DIR or the repo's data/)")
    parser.add_argument("--datasets", default=None, help="comma-separated registry names (default: every dataset whose files are present)")
    parser.add_argument("--synthetic-count", type=int, default=1000, help="seasonal/trend/noise/intermittent series (default 1000)")
    parser.add_argument("--kernelsynth-count", type=int, default=1000, help="KernelSynth GP series (default 1000)")
    parser.add_argument("--kernelsynth-length", type=int, default=1024, help="length of each KernelSynth series (default 1024)")
    parser.add_argument("--periodic-count", type=int, default=1000,
                        help="periodic series: harmonic cycles, trends, level shifts, 1-50%% noise (default 1000)")
    parser.add_argument("--random-walk-count", type=int, default=0,
                        help="random walks: Gaussian/Student-t increments, GARCH volatility, momentum, drift, "
                             "geometric (default 0)")
    parser.add_argument("--tsmixup-count", type=int, default=1000,
                        help="TSMixup series: mixes of 1-3 mean-scaled windows of the corpus' real series of 128+ "
                             "points (data_prep.tsmixup; default 1000; 0 when no real series is that long)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic generators (default 0)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--exclude-eval", dest="exclude_eval", action="store_true", default=True,
                       help="cut evaluation test spans, drop zero-shot sets (default)")
    group.add_argument("--include-eval", dest="exclude_eval", action="store_false",
                       help="keep evaluation test spans and zero-shot sets (leaks: for experiments only)")
    parser.add_argument("--max-series-per-dataset", type=int, default=None, help="keep the first N series of each real dataset")
    parser.add_argument("--source", action="append", default=[], metavar="KIND:PATH",
                        help="add an upstream corpus (repeatable): lotsa:DIR (datasets.save_to_disk folder or a tree "
                             "of them), chronos:PATH (Parquet file or folder), parquet:GLOB or csv:GLOB (long or "
                             "wide tables)")
    parser.add_argument("--no-registered", action="store_true",
                        help="leave the registered datasets out (only --source datasets and synthetic series)")
    parser.add_argument("--num-proc", type=int, default=1,
                        help="processes reading the --source files (one Arrow/Parquet file each at a time; the "
                             "corpus is the same whatever the number; default 1)")
    parser.add_argument("--max-shard-size", default=SHARD_SIZE,
                        help=f"largest Arrow shard of the corpus, e.g. 500MB or 2GB (default {SHARD_SIZE}); the "
                             f"manifest lists every shard with its SHA-256")
    parser.add_argument("--weights", default=None, metavar="FILE",
                        help="YAML/JSON map dataset -> sampling weight, recorded in the manifest (a multiplier of "
                             "each dataset's draw weight when the run config names no train.mixture)")
    return parser


def _build(args: argparse.Namespace, names: list[str], data_dir: Path, staging: Path, out: Path,
           found: list | None = None, weights: dict[str, float] | None = None) -> None:
    """Write the corpus and its complete manifest into `staging` (moved to `out` by the caller)."""
    t0 = time.time()
    stats: list[SourceStats] = []
    found = found or []

    def entries() -> Iterator[CorpusEntry]:
        yield from _real_entries(names, data_dir, args.exclude_eval, args.max_series_per_dataset, stats)
        yield from _synthetic_entries(args.synthetic_count, args.kernelsynth_count, args.kernelsynth_length,
                                      args.periodic_count, args.random_walk_count, args.seed, stats)

    shard = args.max_shard_size
    phases: dict[str, float] = {}  # phase -> seconds, printed with the summary (where a big build spends its time)
    t = time.time()
    if found:
        rows = _write_in_parts(staging, names, data_dir, args, found, stats)
    else:
        rows = write_corpus(entries(), staging, row_stats=False, max_shard_size=shard)
    if not rows:
        raise SystemExit(f"{out}: nothing to write (no registered dataset, source or synthetic series)")
    phases["read + write"], t = time.time() - t, time.time()
    cuts: list[dict] = []
    if args.exclude_eval:
        cuts = decontaminate(staging, data_dir, stats, shard)
        rows -= sum(1 for c in cuts if c["kept"] < MIN_LENGTH)
        phases["leak check"], t = time.time() - t, time.time()
    if args.tsmixup_count:  # mixed from the decontaminated real rows, so it adds no evaluation data
        rows += add_tsmixup(staging, args.tsmixup_count, args.seed, stats, shard)
        phases["tsmixup"], t = time.time() - t, time.time()
    write_row_stats(staging)  # once, on the final rows: what open_corpus reads instead of scanning the values
    phases["row statistics"] = time.time() - t
    elapsed = time.time() - t0
    print(f"{'dataset':22s} {'series':>8s} {'points':>12s}  note")
    for st in stats:
        extra = f" ({st.dropped_short} too short after the cut)" if st.dropped_short else ""
        extra += f" ({st.covariates} of them covariates, never sampled)" if st.covariates else ""
        print(f"{st.name:22s} {st.series:8d} {st.points:12d}  {st.note}{extra}")
    total_points = sum(st.points for st in stats)
    print(f"{'total':22s} {rows:8d} {total_points:12d}  written to {out} in {elapsed:.1f}s ("
          + ", ".join(f"{name} {seconds:.1f}s" for name, seconds in phases.items()) + ")")
    if cuts:
        print(f"decontaminated {len(cuts)} series holding copies of other series' test windows "
              f"(e.g. {cuts[0]['dataset']}/{cuts[0]['item_id']}: {cuts[0]['reason']}); the leak check now passes")
    elif args.exclude_eval:
        print("leak check: no evaluation test window in the corpus")
    settings = {
        "corpus": str(out),
        "data_dir": str(data_dir),
        "exclude_eval": args.exclude_eval,
        "seed": args.seed,
        "synthetic_count": args.synthetic_count,
        "kernelsynth_count": args.kernelsynth_count,
        "kernelsynth_length": args.kernelsynth_length,
        "periodic_count": args.periodic_count,
        "random_walk_count": args.random_walk_count,
        "tsmixup_count": args.tsmixup_count,
        "max_series_per_dataset": args.max_series_per_dataset,
    }
    sources = [
        {"name": st.name, "series": st.series, "points": st.points, "dropped_short": st.dropped_short, "note": st.note,
         "spans": [{"item_id": i, "span_start": a, "span_end": b, "source_length": n} for i, a, b, n in st.spans]}
        for st in stats
    ]
    ingested = _ingested_records(found, stats) if found else None
    if weights is not None:
        present = {st.name for st in stats if st.series}
        unknown = sorted(set(weights) - present)
        if unknown:
            print(f"weights: {len(unknown)} dataset(s) not in this corpus, ignored: {', '.join(unknown[:8])}")
        weights = {name: w for name, w in weights.items() if name in present}
        settings["weights_file"] = str(args.weights)
    write_manifest(staging, settings, rows, total_points, cuts, sources, ingested, weights,
                   shard_records(staging))  # last: marks it complete


def _ingested_records(found: list, stats: list[SourceStats]) -> list[dict]:
    """One manifest record per `--source`: kind, path, its datasets, rows and points (after decontamination)."""
    by_name = {st.name: st for st in stats}
    records: dict[str, dict] = {}
    for ds in found:
        st = by_name[ds.name]
        rec = records.setdefault(str(ds.source), {"kind": ds.source.kind, "path": ds.source.path, "datasets": [],
                                                  "rows": 0, "points": 0, "covariate_rows": 0})
        rec["datasets"].append(ds.name)
        rec["rows"] += st.series
        rec["points"] += st.points
        rec["covariate_rows"] += st.covariates
    return list(records.values())


def main(argv: list[str] | None = None) -> int:
    """Build the corpus, print a summary table, write CORPUS_DIR/manifest.json. Returns 0."""
    args = build_parser().parse_args(argv)
    for flag in ("synthetic_count", "kernelsynth_count", "periodic_count", "random_walk_count", "tsmixup_count"):
        if getattr(args, flag) < 0:
            raise SystemExit(f"--{flag.replace('_', '-')} must be >= 0")
    data_dir = resolve_data_dir(args.data_dir)
    if not data_dir.is_dir():
        raise SystemExit(f"data directory {data_dir} does not exist")
    if args.num_proc < 1:
        raise SystemExit(f"--num-proc must be >= 1, got {args.num_proc}")
    if args.no_registered and args.datasets:
        raise SystemExit("--no-registered and --datasets exclude each other")
    weights = load_weights(args.weights) if args.weights else None
    if args.no_registered:
        names: list[str] = []
    elif args.datasets:
        from data_prep.registry import get_spec

        from data_prep.registry import DatasetMissingError, held_out_reason, resolve_files

        names = [get_spec(n.strip()).name for n in args.datasets.split(",") if n.strip()]
        for name in names:  # a dataset asked for by name must be there: say which file is missing
            try:
                resolve_files(get_spec(name), data_dir)
            except DatasetMissingError as err:
                raise SystemExit(str(err)) from None
        held = {name: held_out_reason(name) for name in names} if args.exclude_eval else {}
        held = {name: why for name, why in held.items() if why}
        if held and len(held) == len(names):  # nothing asked for can go in: say why, not "nothing to write"
            name, why = next(iter(held.items()))
            raise SystemExit(f"--datasets {','.join(held)}: held out of every pretraining corpus ({name}: {why}); "
                             f"pick training datasets, or --include-eval for an experiment that keeps them (leaks)")
    else:
        names = default_datasets(data_dir)
    found = find_sources(args.source, set(names) | set(SYNTHETIC_SOURCES))
    out = Path(args.out)
    inputs = {"--data-dir": data_dir, **{f"--source {ds.source}": ds.files[0] for ds in found}}
    try:
        check_output_dir(out, args.overwrite, kind="corpus", inputs=inputs)
    except OutputDirError as err:
        raise SystemExit(str(err)) from None
    for leftover in remove_leftovers(out, (f"{BUILD_PREFIX}.{out.name}.tmp-",)):
        print(f"removed {leftover}, left behind by an interrupted build")
    staging = make_staging_dir(out)
    try:
        try:
            _build(args, names, data_dir, staging, out, found, weights)
        except DataFormatError as err:  # bad upstream input: one line naming the file; nothing is kept
            raise SystemExit(str(err)) from None
        swap_in(staging, out, "corpus")
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
