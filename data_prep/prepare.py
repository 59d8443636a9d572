"""Build the pretraining corpus: real datasets available offline (evaluation test spans cut away by default) plus
seeded synthetic series, written as one Arrow dataset with a manifest.

moe-ts prepare --out CORPUS_DIR [--data-dir DIR] [--datasets a,b,... | --no-registered] [--synthetic-count N]
    [--kernelsynth-count N] [--kernelsynth-length L] [--periodic-count N] [--random-walk-count N]
    [--tsmixup-count N] [--multivariate-count N] [--seed S] [--exclude-eval | --include-eval] [--max-series-per-dataset N] [--overwrite]
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
from pathlib import Path
from typing import Iterator

from data_prep.build import (MIN_LENGTH, SYNTHETIC_SOURCES, SourceStats, add_tsmixup, decontaminate, real_entries,
                             synthetic_entries, write_in_parts)
from data_prep.corpus import (BUILD_PREFIX, SHARD_SIZE, CorpusEntry, shard_records, write_corpus, write_manifest,
                              write_row_stats)
from data_prep.readers.errors import DataFormatError
from data_prep.paths import resolve_data_dir
from moe_ts.io.output_dir import OutputDirError, check_output_dir, make_staging_dir, remove_leftovers, swap_in


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
    parser.add_argument("--multivariate-count", type=int, default=0,
                        help="synthetic multivariate groups of 2-8 related variates (shared factors, lagged copies, "
                             "a driven target, sums; data_prep.synthetic_multivariate), one row per variate with a "
                             "shared group_id, for train.multivariate_share (default 0)")
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
        yield from real_entries(names, data_dir, args.exclude_eval, args.max_series_per_dataset, stats)
        yield from synthetic_entries(args.synthetic_count, args.kernelsynth_count, args.kernelsynth_length,
                                      args.periodic_count, args.random_walk_count, args.seed, stats,
                                      args.multivariate_count)

    shard = args.max_shard_size
    phases: dict[str, float] = {}  # phase -> seconds, printed with the summary (where a big build spends its time)
    t = time.time()
    if found:
        rows = write_in_parts(staging, names, data_dir, args, found, stats)
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
    if args.multivariate_count:  # only when used: a default corpus' manifest stays as before
        settings["multivariate_count"] = args.multivariate_count
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
    for flag in ("synthetic_count", "kernelsynth_count", "periodic_count", "random_walk_count", "tsmixup_count",
                 "multivariate_count"):
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
