"""Prove that no evaluation test window appears in a corpus.

For every available evaluation dataset (every registry entry whose files are present) and every series, the test
span (data_prep.registry.test_span) is cut into sliding windows of length w = min(span length, WINDOW) (stride 1).
A window counts as *leaked* when the same float32 values appear contiguously inside one corpus target, except
inside the pre-test history of the very same series (same dataset and source item, ending before the test span
starts): a series that repeats itself exactly (e.g. M4 H295) shows those values in its own evaluation context
anyway. Windows holding a NaN or fewer than MIN_DISTINCT distinct values (runs of zeros, intermittent 0/1/2
counts) are skipped: they carry too little identity and match unrelated series by chance; prepare's cut still
excludes them by construction. Matching is a 64-bit polynomial hash over the float32 bit patterns (-0.0 folded into 0.0),
and every hash hit is confirmed by comparing the values, so a reported leak is a real copy.

`moe-ts check CORPUS_DIR (or --corpus CORPUS_DIR) [--data-dir DIR] [--datasets a,b] [--window 16]` exits 1 and names the
offending dataset / series when any test window is found, 0 otherwise. It first compares every Arrow shard with the
size and SHA-256 its manifest records (`moe-ts prepare` writes them), exiting 1 with one line naming a changed shard.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from typing import Iterator

import numpy as np

from data_prep.corpus import load_corpus_dataset

WINDOW = 16
MIN_DISTINCT = 6
_P = np.uint64(0x100000001B3)  # FNV-64 prime as the polynomial base
_CHUNK_POINTS = 4_000_000  # corpus values hashed per pass


@dataclass
class Leak:
    """One evaluation test window found in a corpus row."""

    eval_dataset: str
    eval_item_id: str
    window_offset: int  # position of the window in the evaluation series
    corpus_dataset: str
    corpus_item_id: str
    corpus_offset: int  # position of the copy inside the corpus target
    corpus_row: int


@dataclass
class LeakReport:
    """What was checked and what was found."""

    datasets: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # dataset → reason (e.g. missing files)
    windows: int = 0
    corpus_rows: int = 0
    corpus_points: int = 0
    leaks: list[Leak] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.leaks

    def summary(self) -> str:
        head = (f"checked {self.windows} test windows of {len(self.datasets)} evaluation datasets against "
                f"{self.corpus_rows} corpus series ({self.corpus_points} points)")
        if self.ok:
            return f"no leak: {head}"
        by_pair: dict[tuple[str, str], list[Leak]] = defaultdict(list)
        for leak in self.leaks:
            by_pair[(leak.eval_dataset, leak.corpus_dataset)].append(leak)
        lines = [f"LEAK: {len(self.leaks)} test windows found in the corpus; {head}"]
        for (eval_ds, corpus_ds), leaks in sorted(by_pair.items()):
            first = leaks[0]
            lines.append(
                f"  {eval_ds}: {len(leaks)} windows in corpus dataset {corpus_ds!r}, e.g. series {first.eval_item_id!r} "
                f"test window at {first.window_offset} = corpus item {first.corpus_item_id!r} at {first.corpus_offset}"
            )
        return "\n".join(lines)


def _canonical_bits(values: np.ndarray) -> np.ndarray:
    x = np.asarray(values, dtype=np.float32) + np.float32(0.0)  # folds -0.0 into +0.0
    return x.view(np.uint32).astype(np.uint64)


def _window_hashes(bits: np.ndarray, w: int) -> np.ndarray:
    """Polynomial hash of every length-w window of `bits` (uint64 arithmetic wraps modulo 2**64)."""
    n = len(bits) - w + 1
    if n <= 0:
        return np.empty(0, dtype=np.uint64)
    h = np.zeros(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(w):
            h = h * _P + bits[k : k + n]
    return h


def _hashes_by_length(bits: np.ndarray, lengths: list[int]) -> Iterator[tuple[int, np.ndarray]]:
    """(w, `_window_hashes(bits, w)`) for each w of the ascending `lengths`, in one pass of max(lengths) steps: the
    hashes of the windows of length k+1 extend those of length k (a pass per length costs their sum)."""
    wanted = set(lengths)
    n = len(bits)
    h = np.zeros(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(max(lengths, default=0)):
            if n - k <= 0:
                return
            h = h[: n - k] * _P + bits[k:]  # [n - k] hashes of the windows of length k + 1
            if k + 1 in wanted:
                yield k + 1, h


@dataclass
class _EvalWindows:
    """The test windows of one length w, as arrays (memory: about 24 bytes per window plus the test spans).

    Shape legend: M windows, S evaluation series, V test-span values of all series."""

    w: int
    hashes: np.ndarray  # [M] uint64, sorted
    series: np.ndarray  # [M] int32 evaluation series of each sorted hash
    offset: np.ndarray  # [M] int64 window start inside that series' test span
    span_values: np.ndarray  # [V] float32 every series' test span, one after another
    span_base: np.ndarray  # [S] int64 where each series' span starts in span_values
    test_start: np.ndarray  # [S] int64 where each series' test span starts in the series
    names: list[tuple[str, str]]  # [S] (dataset, item id)

    @cached_property
    def present(self) -> tuple[np.ndarray, int]:
        """A table indexed by the top `bits` bits of a hash, True where some test window's hash has them: a corpus
        hash that misses it cannot match (one cache-friendly lookup instead of a binary search for almost every
        corpus window). About 64 slots per window, at most 2^23."""
        bits = int(min(23, max(10, np.ceil(np.log2(max(len(self.hashes), 1) * 64)))))
        table = np.zeros(1 << bits, dtype=bool)
        table[self.hashes >> np.uint64(64 - bits)] = True
        return table, bits

    def window(self, j: int) -> np.ndarray:
        """The values of sorted window j."""
        a = int(self.span_base[self.series[j]] + self.offset[j])
        return self.span_values[a:a + self.w]


def _distinct_counts(views: np.ndarray) -> np.ndarray:
    ordered = np.sort(views, axis=1)
    return 1 + (np.diff(ordered, axis=1) != 0).sum(axis=1)


def collect_test_windows(
    data_dir: str | os.PathLike[str] | None = None, names: list[str] | None = None, window: int = WINDOW,
    report: LeakReport | None = None, min_distinct: int = MIN_DISTINCT,
) -> dict[int, _EvalWindows]:
    """Hash the test windows of every available evaluation dataset (or of `names`), grouped by window length."""
    from data_prep.registry import all_specs, available, get_spec, load_series, test_span

    specs = [get_spec(n) for n in names] if names else all_specs()
    parts: dict[int, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for spec in specs:
        if not available(spec, data_dir):
            if report is not None:
                report.skipped[spec.name] = "files missing"
            continue
        if report is not None:
            report.datasets.append(spec.name)
        for s in load_series(spec, data_dir):
            start, end = test_span(spec, len(s))
            span = np.asarray(s.target[start:end], dtype=np.float32)
            w = min(len(span), window)
            if w == 0:
                continue
            h = _window_hashes(_canonical_bits(span), w)
            views = np.lib.stride_tricks.sliding_window_view(span, w)
            keep = ~np.isnan(views).any(axis=1)
            keep &= _distinct_counts(views) >= min(min_distinct, w)
            if not keep.any():
                continue
            g = parts[w]
            g["series"].append(np.full(int(keep.sum()), len(g["names"]), dtype=np.int32))
            g["offset"].append(np.flatnonzero(keep).astype(np.int64))
            g["hashes"].append(h[keep])
            g["spans"].append(span)
            g["test_start"].append(start)
            g["names"].append((spec.name, s.item_id))
    out = {}
    for w, g in parts.items():
        hashes = np.concatenate(g["hashes"])
        order = np.argsort(hashes, kind="stable")
        lengths = np.asarray([len(x) for x in g["spans"]], dtype=np.int64)
        out[w] = _EvalWindows(w, hashes[order], np.concatenate(g["series"])[order], np.concatenate(g["offset"])[order],
                              np.concatenate(g["spans"]), np.concatenate([[0], np.cumsum(lengths)[:-1]]),
                              np.asarray(g["test_start"], dtype=np.int64), g["names"])
        if report is not None:
            report.windows += len(hashes)
    return out


class _RowMeta:
    """(dataset, item id, source item id, span start) of corpus rows, read from the Arrow columns only on a hit."""

    def __init__(self, table) -> None:
        self.columns = [table.column(c) for c in ("dataset", "item_id", "source_item_id", "span_start")]

    def __getitem__(self, row: int) -> tuple:
        return tuple(col[row].as_py() for col in self.columns)


def _scan_chunk(values: np.ndarray, offsets: np.ndarray, row_base: int, meta: _RowMeta,
                windows: dict[int, _EvalWindows], report: LeakReport, max_leaks: int | None) -> None:
    """Hash every window of the concatenated targets `values` (rows delimited by `offsets`) and record confirmed hits."""
    bits = _canonical_bits(values)
    for w, h in _hashes_by_length(bits, sorted(windows)):
        ev = windows[w]
        table, top = ev.present
        maybe = np.flatnonzero(table[h >> np.uint64(64 - top)])
        if not len(maybe):
            continue
        pos = np.minimum(np.searchsorted(ev.hashes, h[maybe]), len(ev.hashes) - 1)
        found = ev.hashes[pos] == h[maybe]
        hit, pos = maybe[found], pos[found]
        if not len(hit):
            continue
        pos_of = dict(zip(hit.tolist(), pos.tolist()))  # corpus window -> first matching sorted test window
        row_start = np.searchsorted(offsets, hit, side="right") - 1
        row_end_of_window = np.searchsorted(offsets, hit + w - 1, side="right") - 1
        for p, r, r2 in zip(hit, row_start, row_end_of_window):
            if r != r2:
                continue  # window straddles two corpus rows
            window_values = values[p : p + w]
            j = int(pos_of[p])
            while j < len(ev.hashes) and ev.hashes[j] == h[p]:
                series, off = int(ev.series[j]), int(ev.offset[j])
                ref = ev.window(j)
                j += 1
                if not np.array_equal(ref, window_values):
                    continue
                ds, item = ev.names[series]
                test_start = int(ev.test_start[series])
                corpus_ds, corpus_item, source_item, span_start = meta[row_base + int(r)]
                in_row = int(p - offsets[r])
                if corpus_ds == ds and source_item == item and span_start + in_row + w <= test_start:
                    continue  # the series' own history, which its evaluation context shows anyway
                report.leaks.append(Leak(ds, item, test_start + off, corpus_ds, corpus_item, in_row,
                                         row_base + int(r)))
                if max_leaks is not None and len(report.leaks) >= max_leaks:
                    return


def check_corpus(
    corpus_path: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None = None, names: list[str] | None = None,
    window: int = WINDOW, max_leaks: int | None = None, min_distinct: int = MIN_DISTINCT,
) -> LeakReport:
    """Search the corpus for every available evaluation test window; returns a LeakReport (report.ok when clean).
    Streams: the corpus is read memory-mapped in blocks of about _CHUNK_POINTS values, row metadata only on a hit,
    so memory is the test windows' arrays plus one block, whatever the corpus size."""
    report = LeakReport()
    corpus = load_corpus_dataset(corpus_path)  # first: a bad path fails before the slow window collection
    windows = collect_test_windows(data_dir, names, window, report, min_distinct)
    table = corpus.data.table if hasattr(corpus.data, "table") else corpus.data
    targets = table.column("target")
    meta = _RowMeta(table)
    report.corpus_rows = len(table)
    row = 0
    for chunk in targets.chunks:
        offsets_all = chunk.offsets.to_numpy()
        offsets_all = offsets_all - offsets_all[0]
        flat = chunk.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        n_rows = len(chunk)
        report.corpus_points += len(flat)
        # split big chunks into row groups of about _CHUNK_POINTS values
        r0 = 0
        while r0 < n_rows:
            r1 = int(np.searchsorted(offsets_all, offsets_all[r0] + _CHUNK_POINTS, side="right")) - 1
            r1 = min(max(r1, r0 + 1), n_rows)
            lo, hi = offsets_all[r0], offsets_all[r1]
            _scan_chunk(flat[lo:hi], offsets_all[r0 : r1 + 1] - lo, row + r0, meta, windows, report, max_leaks)
            if max_leaks is not None and len(report.leaks) >= max_leaks:
                return report
            r0 = r1
        row += n_rows
    return report


def main(argv: list[str] | None = None) -> int:
    """CLI: check a corpus; print the summary; exit status 1 when a test window is found."""
    parser = argparse.ArgumentParser(prog="moe-ts check", description=__doc__.splitlines()[0])
    parser.add_argument("corpus_dir", nargs="?", help="corpus directory written by `moe-ts prepare`")
    parser.add_argument("--corpus", default=None, help="the corpus directory (same as the positional argument)")
    parser.add_argument("--data-dir", default=None, help="benchmark data directory (default: $MOE_TS_DATA_DIR or the repo's data/)")
    parser.add_argument("--datasets", default=None, help="comma-separated registry names (default: every available one)")
    parser.add_argument("--window", type=int, default=WINDOW, help=f"window length (default {WINDOW})")
    args = parser.parse_args(argv)
    corpus = args.corpus or args.corpus_dir
    if corpus is None or (args.corpus and args.corpus_dir and args.corpus != args.corpus_dir):
        parser.error("give the corpus directory once, as CORPUS or --corpus CORPUS")
    if args.window < 2:
        parser.error("--window must be at least 2")
    names = [n.strip() for n in args.datasets.split(",") if n.strip()] if args.datasets else None
    from data_prep.corpus import CorpusError, read_manifest, verify_shards

    manifest = read_manifest(corpus)
    checked = 0
    if manifest is not None:
        try:
            checked = verify_shards(corpus, manifest, hashes=True)
        except CorpusError as err:
            print(str(err), file=sys.stderr)
            return 1
    report = check_corpus(corpus, args.data_dir, names, args.window)
    print(report.summary())
    if checked:
        print(f"shards: the {checked} Arrow file(s) match the SHA-256 in the manifest")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
