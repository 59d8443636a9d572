"""The evaluation datasets on this machine, and fetching them.

    moe-ts data list [--data-dir DIR] [--suite S]        # every registered dataset: available / downloadable /
                                                          # manual, size on disk, where it comes from
    moe-ts data download NAME [NAME ...] [--max-workers N]
    moe-ts data download --suite monash|zeroshot|lsf|monash_extra|all [--max-workers N]

Downloads go to the cache ($MOE_TS_CACHE, default under the user's cache folder) in the registry's layout, where
`eval` and `prepare` find them after the data directory; checksums are pinned in data_prep/sources.py or recorded
on the first download in the lock file ($MOE_TS_CHECKSUM_LOCK) and enforced after that. Available datasets are
skipped; each failure is one line on stderr and the exit status is 1. Offline: MOE_TS_OFFLINE=1 or HF_HUB_OFFLINE=1.
"""
from __future__ import annotations

import argparse
import sys

from data_prep import registry
from data_prep.download import cache_dir
from data_prep.download_datasets import download_many, human_size, status
from data_prep.paths import resolve_data_dir

SUITE_CHOICES = (*registry.SUITES, "all")


def _specs(names: list[str], suite: str | None) -> list[registry.DatasetSpec]:
    if suite == "all":
        return registry.all_specs()
    if suite is not None:
        return [registry.get_spec(n) for n in registry.list_suite(suite)]
    specs: list[registry.DatasetSpec] = []
    for name in names:
        try:
            spec = registry.get_spec(name)
        except KeyError as err:
            raise SystemExit(str(err.args[0])) from None
        if spec not in specs:
            specs.append(spec)
    return specs


def listing(data_dir: str | None = None, suite: str | None = None) -> str:
    """One line per dataset: name, suites, status, size on disk, and where it is (available) or comes from."""
    root = resolve_data_dir(data_dir)
    lines = [f"data directory: {root} (--data-dir or $MOE_TS_DATA_DIR); download cache: {cache_dir()} ($MOE_TS_CACHE)",
             f"{'dataset':22s} {'suites':14s} {'status':12s} {'size':>9s}  source / location"]
    counts = {"available": 0, "downloadable": 0, "manual": 0}
    for spec in _specs([], suite or "all"):
        st = status(spec, root)
        counts[st.state] += 1
        size = human_size(st.size_bytes) if st.state == "available" else "-"
        where = st.where() + (f" -> {st.paths[0].parent if len(st.paths) > 1 else st.paths[0]}"
                              if st.state == "available" else "")
        lines.append(f"{spec.name:22s} {','.join(spec.suites):14s} {st.state:12s} {size:>9s}  {where}")
    lines.append(f"{counts['available']} available, {counts['downloadable']} downloadable (moe-ts data download NAME), "
                 f"{counts['manual']} manual (see `moe-ts data download NAME` for the steps)")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="moe-ts data", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", required=True)
    ls = sub.add_parser("list", help="every registered dataset with its status, size and source")
    ls.add_argument("--data-dir", help="data folder (default: $MOE_TS_DATA_DIR, else <repo>/data)")
    ls.add_argument("--suite", choices=SUITE_CHOICES, help="only this suite")
    dl = sub.add_parser("download", help="fetch datasets into the cache (available ones are skipped)")
    dl.add_argument("names", nargs="*", metavar="NAME", help="registry names (see `moe-ts data list`)")
    dl.add_argument("--suite", choices=SUITE_CHOICES, help="every dataset of a suite ('all': every registered one)")
    dl.add_argument("--max-workers", type=int, default=4, help="datasets fetched at once (default 4)")
    dl.add_argument("--data-dir", help="data folder checked first (default: $MOE_TS_DATA_DIR, else <repo>/data)")
    dl.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.action == "list":
        print(listing(args.data_dir, args.suite))
        return 0
    if bool(args.names) == bool(args.suite):
        parser.error("name datasets or give --suite (not both)")
    if args.max_workers < 1:
        parser.error(f"--max-workers must be >= 1, got {args.max_workers}")
    specs = _specs(args.names, args.suite)
    outcomes = download_many(specs, args.data_dir, max_workers=args.max_workers, progress=not args.no_progress)
    for o in outcomes:
        if o.result == "available":
            print(f"{o.name}: available, skipped ({o.paths[0] if o.paths else ''})")
        elif o.result == "downloaded":
            print(f"{o.name}: downloaded ({', '.join(str(p) for p in o.paths)})")
    failed = [o for o in outcomes if o.result == "failed"]
    for o in failed:
        print(f"moe-ts data: error: {o.error}", file=sys.stderr)
    done = sum(o.result == "downloaded" for o in outcomes)
    skipped = sum(o.result == "available" for o in outcomes)
    print(f"{done} downloaded, {skipped} already available, {len(failed)} failed (of {len(outcomes)})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
