"""The vectorised, counter-based sampler of packed batches (`train.sampler: vectorised`; docs/ARCHITECTURE.md §4).

Same mixture and windows as `pretrain.data.WindowSampler`, drawn in bulk: every random number of micro-batch k
comes from its own generator, SeedSequence(seed, spawn_key=(rank, k)), so any batch can be made on its own. That
is what lets worker processes make batches in parallel (`pretrain.loader`) and a resumed run continue from the
batch counter alone. Per batch, the draws of all candidate windows (dataset, series, length, start) are array
operations; what remains per window is one slice copy into the packed row.

Two differences from the sequential sampler, by design: a row's last window is cut to the patches that remain
(the sequential sampler draws its length from what remains instead), and a window that is entirely missing is
turned into padding (the sequential sampler draws again). Both change which windows a row holds, not the
mixture, the series weights or the window-length distribution of the other windows.

Shape legend: B rows per batch, N patches per row, P patch size, K candidate windows, W windows used.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import torch

from data_prep.corpus import Corpus, CorpusError
from pretrain.data import MAX_CONSECUTIVE_SKIPS, PackedSampler

SAMPLER_KIND = "vectorised"
GATHER_BELOW = 128  # windows shorter than this many values are gathered in bulk, longer ones copied one by one


class VectorisedSampler(PackedSampler):
    """Deterministic source of packed batches {target [B, N·P], sample_id [B, N]}; batch k depends on (seed,
    rank, k) only. `state_dict()` is the batch counter plus totals, so resuming needs no generator state."""

    kind = SAMPLER_KIND

    def __init__(self, corpus: Corpus, **kwargs: Any) -> None:
        super().__init__(corpus, **kwargs)
        # Where each usable row's values live: its Arrow chunk and offset there (computed once, U entries).
        rows = self.index.rows
        self._chunk = (np.searchsorted(corpus.chunk_first_row, rows, side="right") - 1).astype(np.int64)
        row_offset = np.concatenate([offs[:-1] for offs in corpus.chunk_offsets]).astype(np.int64)  # [R]
        # Where each usable row's values start in one flat array ("home"): the whole memory-mapped shard file
        # when the values were read without a copy, else the chunk's own array; batches gather from homes.
        self._homes, chunk_home, chunk_start = _flat_homes(corpus.chunk_values)
        self._home = chunk_home[self._chunk]  # [U]
        self._offset = chunk_start[self._chunk] + row_offset[rows]  # [U] start of each row in its home
        self._length = corpus.lengths[rows]
        self._dataset_base = np.concatenate([[0.0], self.index.cumweights])[self.index.bounds[:-1]]  # [D]
        self._dataset_total = self.index.cumweights[self.index.bounds[1:] - 1] - self._dataset_base  # [D]
        self.batches = 0  # micro-batches produced (the next batch's k)
        self._skip_run = 0  # all-missing windows in a row, across batches
        self._per_row = self.seq_patches / (2 * self.min_window_patches)  # windows per row: sizes the first draw

    # --- drawing ---------------------------------------------------------------------------------------------

    def _candidates(self, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`count` candidate windows: usable-row index [K], window length in values [K], start uniform [K]."""
        u = rng.random((count, 4))
        cum = self.index.dataset_cum
        d = np.minimum(np.searchsorted(cum, u[:, 0] * cum[-1], side="right"), len(cum) - 1)
        x = self._dataset_base[d] + u[:, 1] * self._dataset_total[d]
        order = np.argsort(x)  # sorted queries: numpy's binary search starts from the last answer (fewer misses)
        j = np.empty(count, dtype=np.int64)
        j[order] = np.searchsorted(self.index.cumweights, x[order], side="right")
        j = np.clip(j, self.index.bounds[d], self.index.bounds[d + 1] - 1)
        length = self._length[j]
        p = self.patch_size
        hi = np.minimum(length, self.seq_patches * p)
        lo = np.minimum(np.minimum(length, self.min_window_patches * p), hi)
        wlen = np.minimum(lo + (u[:, 2] * (hi - lo + 1)).astype(np.int64), hi)
        return j, wlen, u[:, 3]

    def _plan(self, rng: np.random.Generator, batch_size: int) -> tuple[np.ndarray, ...]:
        """Windows of `batch_size` rows, in row order: usable-row index, length in values, start in the series,
        packed row and first patch in it, each [W]. Candidates are drawn in blocks from `rng`; the block size
        does not change the result (the uniforms come in the same order whatever their block)."""
        n_cap, p, min_wp = self.seq_patches, self.patch_size, self.min_window_patches
        j, wlen, u_start = self._candidates(rng, int(batch_size * self._per_row * 1.25) + 16)
        cum = np.cumsum(-(-wlen // p))  # [K] patches of the candidates so far, cumulated
        cursor, ends, cuts = 0, [], []  # next candidate; per row its last candidate and that one's patches
        while len(ends) < batch_size:
            base = int(cum[cursor - 1]) if cursor else 0
            # the row ends at the first window after which fewer than min_wp patches remain free
            end = int(np.searchsorted(cum, base + n_cap - min_wp, side="right"))
            if end >= len(cum):
                j2, w2, s2 = self._candidates(rng, max((batch_size - len(ends)) * int(self._per_row * 1.25), 64))
                j, wlen, u_start = np.concatenate([j, j2]), np.concatenate([wlen, w2]), np.concatenate([u_start, s2])
                cum = np.cumsum(-(-wlen // p))
                continue
            before = int(cum[end - 1]) - base if end > cursor else 0
            ends.append(end)
            cuts.append(n_cap - before)  # patches free for the row's last window
            cursor = end + 1
        used = cursor
        ends_a = np.asarray(ends)
        counts = np.diff(np.concatenate([[-1], ends_a]))  # windows per row
        self._per_row = 0.9 * self._per_row + 0.1 * used / batch_size
        row_of = np.repeat(np.arange(batch_size), counts)
        length = wlen[:used].copy()
        length[ends_a] = np.minimum(length[ends_a], np.asarray(cuts) * p)
        patches = -(-length // p)
        before_all = np.concatenate([[0], np.cumsum(patches)])[:-1]  # patches before each window, over the batch
        first_patch = before_all - before_all[np.concatenate([[0], ends_a[:-1] + 1])][row_of]
        rows_j = j[:used]
        start = (u_start[:used] * (self._length[rows_j] - length + 1)).astype(np.int64)
        return rows_j, length, start, row_of, first_patch

    def _copy_values(self, target: np.ndarray, rows_j: np.ndarray, start: np.ndarray, length: np.ndarray,
                     dst: np.ndarray) -> None:
        """Copy `length` values of usable rows `rows_j` from `start` into the flat `target` at `dst`, each [W]."""
        src = self._offset[rows_j] + start  # [W] first value of each window in its home
        home = self._home[rows_j]
        # Long windows: one slice copy each (a memcpy); short ones, where the per-window Python call would cost
        # more than the copy, in one index gather per home (a shard file).
        long = length >= GATHER_BELOW
        homes = self._homes
        for h, d, s, w in zip(home[long].tolist(), dst[long].tolist(), src[long].tolist(), length[long].tolist()):
            target[d:d + w] = homes[h][s:s + w]
        for h in np.unique(home[~long]):
            mine = ~long & (home == h)
            lens = length[mine]
            step = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)  # 0..len-1 per window
            target[np.repeat(dst[mine], lens) + step] = homes[h][np.repeat(src[mine], lens) + step]

    def make_batch(self, k: int, batch_size: int) -> dict[str, Any]:
        """Micro-batch number `k` (a pure function of seed, rank and k): target [B, N·P] float32 (NaN where nothing
        or a missing value lies), sample_id [B, N] int64 (windows 1..m per row, 0 = padding), and `counts`
        (windows kept, entirely missing windows turned into padding, padding patches, and the runs of missing
        windows at the start, the longest and at the end, and the windows drawn)."""
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(self.rank, k)))
        rows_j, length, start, row_of, first_patch = self._plan(rng, batch_size)
        n_cap, p = self.seq_patches, self.patch_size
        target = np.full(batch_size * n_cap * p, np.nan, dtype=np.float32)  # [B·N·P]
        dst = row_of * (n_cap * p) + first_patch * p  # [W]
        self._copy_values(target, rows_j, start, length, dst)
        # [W] observed values per window: summed from each window's start to the next one's, since everything
        # between a window's end and the next window is NaN (patch tails, padding)
        observed = np.add.reduceat((~np.isnan(target)).view(np.uint8), dst, dtype=np.int64)
        kept = observed > 0  # [W] windows with an observed value
        patches = -(-length // p)
        kept_cum = np.cumsum(kept)
        row_first = np.searchsorted(row_of, np.arange(batch_size))  # [B] first window of each row
        ids = np.where(kept, kept_cum - (kept_cum - kept)[row_first][row_of], 0)  # 1..m per row, 0 = dropped
        patch_pos = np.repeat(row_of * n_cap + first_patch - np.concatenate([[0], np.cumsum(patches)])[:-1], patches)
        patch_pos += np.arange(int(patches.sum()))
        sample_id = np.zeros(batch_size * n_cap, dtype=np.int64)  # [B·N]
        sample_id[patch_pos] = np.repeat(ids, patches)
        missing = ~kept
        counts = np.asarray([int(kept.sum()), int(missing.sum()), batch_size * n_cap - int(patches[kept].sum()),
                             _leading_run(missing), _longest_run(missing), _leading_run(missing[::-1]),
                             len(kept)], dtype=np.int64)
        return {"target": torch.from_numpy(target.reshape(batch_size, n_cap * p)),
                "sample_id": torch.from_numpy(sample_id.reshape(batch_size, n_cap)),
                "counts": torch.from_numpy(counts)}

    def account(self, batch: dict[str, Any], batch_size: int) -> dict[str, torch.Tensor]:
        """Add a made batch's counts to the totals (and refuse a corpus whose windows keep coming out entirely
        missing, MAX_CONSECUTIVE_SKIPS in a row); returns the batch without them, as the trainer takes it."""
        kept, skipped, padding, leading, longest, trailing, total = (int(v) for v in batch.pop("counts"))
        run = self._skip_run + total if skipped == total else max(self._skip_run + leading, longest)
        if run >= MAX_CONSECUTIVE_SKIPS:
            raise CorpusError(f"{self.corpus.path}: {MAX_CONSECUTIVE_SKIPS} consecutive windows were entirely "
                              f"missing")
        self._skip_run = run if skipped == total else trailing
        self.batches += 1
        self.rows += batch_size
        self.windows += kept
        self.skipped += skipped
        self.padding += padding
        return batch

    def next_batch(self, batch_size: int) -> dict[str, torch.Tensor]:
        """The next micro-batch, made in this process: target [B, N·P] float32, sample_id [B, N] int64."""
        return self.account(self.make_batch(self.batches, batch_size), batch_size)

    def state_dict(self) -> dict[str, Any]:
        """The batch counter and totals (JSON-serialisable)."""
        return {"batches": self.batches, "rows": self.rows, "windows": self.windows, "skipped": self.skipped,
                "padding": self.padding, "skip_run": self._skip_run, "fingerprint": self.fingerprint()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue exactly where `state` was taken; refuses a state from another corpus, config or sampler."""
        self.check_state(state)
        self.batches, self.rows, self.windows = int(state["batches"]), int(state["rows"]), int(state["windows"])
        self.skipped, self.padding = int(state["skipped"]), int(state["padding"])
        self._skip_run = int(state.get("skip_run", 0))


def _flat_homes(chunk_values: list[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Flat float32 arrays holding the chunks' values, and each chunk's array index and element offset there.
    A chunk read zero-copy from a memory-mapped Arrow file lives in that file's mapping (the root of its pyarrow
    buffer's parents): chunks of one file share one array. Others (copied: nulls, another dtype) are their own."""
    homes: list[np.ndarray] = []
    by_address: dict[int, int] = {}
    chunk_home, chunk_start = [], []
    for values in chunk_values:
        root = _root_buffer(values)
        offset = -1 if root is None else values.__array_interface__["data"][0] - root.address
        if root is not None and offset % 4 == 0 and 0 <= offset and offset + values.nbytes <= root.size:
            if root.address not in by_address:
                by_address[root.address] = len(homes)
                homes.append(np.frombuffer(root, dtype=np.float32, count=root.size // 4))
            chunk_home.append(by_address[root.address])
            chunk_start.append(offset // 4)
        else:
            homes.append(values)
            chunk_home.append(len(homes) - 1)
            chunk_start.append(0)
    return homes, np.asarray(chunk_home, dtype=np.int64), np.asarray(chunk_start, dtype=np.int64)


def _root_buffer(values: np.ndarray) -> pa.Buffer | None:
    """The outermost pyarrow buffer a zero-copy numpy view of an Arrow float array lies in, or None."""
    base: Any = values
    while isinstance(base, np.ndarray):
        base = base.base
    if not isinstance(base, pa.Array) or len(base.buffers()) < 2 or base.buffers()[1] is None:
        return None
    buffer = base.buffers()[1]
    while buffer.parent is not None:
        buffer = buffer.parent
    return buffer


def _leading_run(flags: np.ndarray) -> int:
    """Length of the run of True at the start of `flags`."""
    false = np.flatnonzero(~flags)
    return len(flags) if not len(false) else int(false[0])


def _longest_run(flags: np.ndarray) -> int:
    """Length of the longest run of True in `flags`."""
    if not flags.any():
        return 0
    edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    return int((np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)).max())
