"""Any-variate batches from the vectorised, counter-based sampler (`train.sampler: vectorised` with
`train.multivariate_share` > 0; docs/ARCHITECTURE.md §4).

The draws of `pretrain.variate_groups.AnyVariateSampler` made as `pretrain.batch_sampler.VectorisedSampler` makes
its windows: every candidate window of micro-batch k is one row of uniforms from SeedSequence(seed, spawn_key=(rank,
k)) (series or group, which series or group, how many variates, length, start), so batch k is still a pure function
of (seed, rank, k) and loader workers can make it. The groups' random subsets of variates come from a generator of
their own, SeedSequence(seed, spawn_key=(rank, k, 0)), drawn for the batch's used group windows only (one key per
member of a group of up to SUBSET_BY_KEYS, a `choice` per window of a larger group), so the candidates drawn beyond
those used (their number depends on the sampler's history) shift no draw.

Differences from the sequential any-variate sampler, by the vectorised sampler's rules: a group candidate is drawn
whatever room is left (V uniform in 2..min(group size, max_variates, N // min_window_patches), T up to N // V
patches); a row's last window is cut to the patches that remain, a group first to as many variates as windows of
min_window_patches fit there and then to the time window they fit; a window with nothing observed becomes padding; variates entirely missing in
a window stay (they get no loss), where the sequential sampler drops them.

Shape legend: B rows per batch, N patches per row, P patch size, K candidate windows, W windows used, Q pieces (one
per variate of a used window).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from data_prep.corpus import Corpus
from pretrain.batch_sampler import VectorisedSampler, _leading_run, _longest_run
from pretrain.data import series_weights
from pretrain.variate_groups import VariateGroups, check_variate_draws

SUBSET_BY_KEYS = 256  # groups of up to this many members draw their subsets by one key per member, vectorised


class AnyVariateVectorisedSampler(VectorisedSampler):
    """Vectorised batches {target [B, N·P], sample_id [B, N], variate_id [B, N]} with multivariate groups; batch k
    depends on (seed, rank, k) only, the checkpointed state is the batch counter."""

    def __init__(self, corpus: Corpus, *, multivariate_share: float, max_variates: int = 128,
                 **kwargs: Any) -> None:
        check_variate_draws(multivariate_share, max_variates)
        super().__init__(corpus, **kwargs)
        self.multivariate_share, self.max_variates = float(multivariate_share), int(max_variates)
        window_len = self.seq_patches * self.patch_size
        self.groups = VariateGroups.from_corpus(corpus, self.index, window_len, kwargs.get("max_windows_per_series", 16))
        usable_of = np.full(len(corpus), -1, dtype=np.int64)
        usable_of[self.index.rows] = np.arange(len(self.index.rows))
        self._member_u = usable_of[self.groups.members]  # [M] each member's usable-row index (homes, offsets)
        self._group_size = np.diff(self.groups.bounds)  # [G]
        # The groups of the drawable datasets one after another, one cumulative weight over them (as SeriesIndex).
        self._group_order = np.concatenate(self.groups.dataset_groups)
        weights = series_weights(self.groups.length[self._group_order], window_len,
                                 kwargs.get("max_windows_per_series", 16))
        self._group_cum = np.cumsum(weights)
        sizes = [len(g) for g in self.groups.dataset_groups]
        self._group_bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self._group_base = np.concatenate([[0.0], self._group_cum])[self._group_bounds[:-1]]
        self._group_total = self._group_cum[self._group_bounds[1:] - 1] - self._group_base
        self.group_windows = 0  # group windows packed

    def account(self, batch: dict[str, Any], batch_size: int) -> dict[str, torch.Tensor]:
        """`VectorisedSampler.account`, plus the batch's group windows (the last of its counts)."""
        counts = batch["counts"]
        self.group_windows += int(counts[-1])
        batch["counts"] = counts[:-1]
        return super().account(batch, batch_size)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "group_windows": self.group_windows}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.group_windows = int(state.get("group_windows", 0))

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), "multivariate_share": self.multivariate_share,
                "max_variates": self.max_variates, "groups": len(self.groups)}

    # --- drawing ---------------------------------------------------------------------------------------------

    def _any_candidates(self, rng: np.random.Generator, count: int) -> tuple[np.ndarray, ...]:
        """`count` candidates: usable-row index (series), group (-1: a series), variates, length in values, start
        uniform, each [K]; one row of 8 uniforms per candidate."""
        u = rng.random((count, 8))
        p, n_cap, min_wp = self.patch_size, self.seq_patches, self.min_window_patches
        cum = self.index.dataset_cum
        d = np.minimum(np.searchsorted(cum, u[:, 0] * cum[-1], side="right"), len(cum) - 1)
        x = self._dataset_base[d] + u[:, 1] * self._dataset_total[d]
        order = np.argsort(x)  # sorted queries, as VectorisedSampler._candidates: about 2x faster on a large corpus
        j = np.empty(count, dtype=np.int64)
        j[order] = np.searchsorted(self.index.cumweights, x[order], side="right")
        j = np.clip(j, self.index.bounds[d], self.index.bounds[d + 1] - 1)
        length = self._length[j]
        gcum = self.groups.dataset_cum
        gd = np.minimum(np.searchsorted(gcum, u[:, 5] * gcum[-1], side="right"), len(gcum) - 1)
        gi = np.searchsorted(self._group_cum, self._group_base[gd] + u[:, 6] * self._group_total[gd], side="right")
        g = self._group_order[np.clip(gi, self._group_bounds[gd], self._group_bounds[gd + 1] - 1)]
        most = np.minimum(np.minimum(self._group_size[g], self.max_variates), max(n_cap // min_wp, 2))
        is_group = u[:, 4] < self.multivariate_share
        variates = np.where(is_group, np.minimum(2 + (u[:, 7] * (most - 1)).astype(np.int64), most), 1)
        length = np.where(is_group, self.groups.length[g], length)
        hi = np.minimum(length, (n_cap // variates) * p)
        lo = np.minimum(np.minimum(length, min_wp * p), hi)
        wlen = np.minimum(lo + (u[:, 2] * (hi - lo + 1)).astype(np.int64), hi)
        return j, np.where(is_group, g, -1), variates, wlen, u[:, 3]

    def _any_plan(self, rng: np.random.Generator, batch_size: int) -> tuple[np.ndarray, ...]:
        """Windows of `batch_size` rows, in row order, each [W]: usable-row index, group (-1: series), variates,
        length in values, start in the series, packed row, first patch in it. As `VectorisedSampler._plan`, with a
        window taking variates · ceil(length / P) patches."""
        n_cap, p, min_wp = self.seq_patches, self.patch_size, self.min_window_patches
        cand = list(self._any_candidates(rng, int(batch_size * self._per_row * 1.25) + 16))
        cum = np.cumsum(cand[2] * -(-cand[3] // p))  # [K] patches of the candidates so far, cumulated
        cursor, ends, cuts = 0, [], []
        while len(ends) < batch_size:
            base = int(cum[cursor - 1]) if cursor else 0
            end = int(np.searchsorted(cum, base + n_cap - min_wp, side="right"))
            if end >= len(cum):
                more = self._any_candidates(rng, max((batch_size - len(ends)) * int(self._per_row * 1.25), 64))
                cand = [np.concatenate([a, b]) for a, b in zip(cand, more)]
                cum = np.cumsum(cand[2] * -(-cand[3] // p))
                continue
            before = int(cum[end - 1]) - base if end > cursor else 0
            ends.append(end)
            cuts.append(n_cap - before)
            cursor = end + 1
        used = cursor
        ends_a, cuts_a = np.asarray(ends), np.asarray(cuts)
        counts = np.diff(np.concatenate([[-1], ends_a]))
        self._per_row = 0.9 * self._per_row + 0.1 * used / batch_size
        row_of = np.repeat(np.arange(batch_size), counts)
        rows_j, group, variates, length, u_start = (a[:used].copy() for a in cand)
        # a row's last window: as many variates as windows of min_wp patches fit in what remains (cuts >= min_wp),
        # then the time window they fit; one patch per variate would be all statistics, never scored
        variates[ends_a] = np.minimum(variates[ends_a], cuts_a // min_wp)
        length[ends_a] = np.minimum(length[ends_a], (cuts_a // variates[ends_a]) * p)
        patches = variates * -(-length // p)
        before_all = np.concatenate([[0], np.cumsum(patches)])[:-1]
        first_patch = before_all - before_all[np.concatenate([[0], ends_a[:-1] + 1])][row_of]
        full = np.where(group >= 0, self.groups.length[np.maximum(group, 0)], self._length[rows_j])
        start = (u_start * (full - length + 1)).astype(np.int64)
        return rows_j, group, variates, length, start, row_of, first_patch

    def _subsets(self, k: int, group: np.ndarray, variates: np.ndarray) -> np.ndarray:
        """Usable-row indices of a random subset of `variates[i]` members of each `group[i]`, in variate order,
        concatenated, from a generator of its own, SeedSequence(seed, spawn_key=(rank, k, 0)): in a group of up to
        SUBSET_BY_KEYS members, the members with the smallest of one uniform key each (all such windows at once);
        in a larger one, `Generator.choice` without replacement, window by window (O(variates), where keys for
        every member of a group of thousands would cost more than the rest of the batch)."""
        sub = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(self.rank, k, 0)))
        sizes = self._group_size[group]
        by_keys = np.flatnonzero(sizes <= SUBSET_BY_KEYS)
        keys = sub.random(int(sizes[by_keys].sum()))
        win = np.repeat(by_keys, sizes[by_keys])
        member = _within(sizes[by_keys])  # 0..size-1 in each group
        rank = np.empty_like(member)
        rank[np.lexsort((keys, win))] = member  # each member's place in its group by key
        chosen = rank < variates[win]
        wins, members = [win[chosen]], [member[chosen]]
        for i in np.flatnonzero(sizes > SUBSET_BY_KEYS):
            wins.append(np.full(variates[i], i))
            members.append(np.sort(sub.choice(sizes[i], size=variates[i], replace=False)))
        win_q, member_q = np.concatenate(wins), np.concatenate(members)
        order = np.argsort(win_q, kind="stable")  # window by window, each in variate order
        return self._member_u[self.groups.bounds[group][win_q[order]] + member_q[order]]

    def make_batch(self, k: int, batch_size: int) -> dict[str, Any]:
        """Micro-batch number `k` (a pure function of seed, rank and k): target, sample_id, variate_id and `counts`
        as `VectorisedSampler.make_batch` (windows, not variates, are counted) with the group windows kept last."""
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(self.rank, k)))
        rows_j, group, variates, length, start, row_of, first_patch = self._any_plan(rng, batch_size)
        n_cap, p = self.seq_patches, self.patch_size
        tp = -(-length // p)  # [W] patches per variate
        # one piece per variate of each window: its usable row, its variate index, its first patch
        window_of = np.repeat(np.arange(len(rows_j)), variates)  # [Q]
        piece_var = _within(variates)  # [Q] variate index of each piece
        first_piece = np.concatenate([[0], np.cumsum(variates)[:-1]])  # [W]
        piece_row = rows_j[window_of].copy()
        gw = np.flatnonzero(group >= 0)  # the group windows: each keeps a random subset, in variate order
        if len(gw):
            piece_row[np.repeat(first_piece[gw], variates[gw]) + _within(variates[gw])] = self._subsets(
                k, group[gw], variates[gw])
        piece_patch = first_patch[window_of] + piece_var * tp[window_of]
        dst = row_of[window_of] * (n_cap * p) + piece_patch * p  # [Q]
        target = np.full(batch_size * n_cap * p, np.nan, dtype=np.float32)
        self._copy_values(target, piece_row, start[window_of], length[window_of], dst)
        piece_observed = np.add.reduceat((~np.isnan(target)).view(np.uint8), dst, dtype=np.int64)
        kept = np.add.reduceat(piece_observed, first_piece) > 0  # [W]
        patches = variates * tp
        kept_cum = np.cumsum(kept)
        row_first = np.searchsorted(row_of, np.arange(batch_size))
        ids = np.where(kept, kept_cum - (kept_cum - kept)[row_first][row_of], 0)
        piece_kept = kept[window_of]
        pos = np.repeat(row_of[window_of] * n_cap + piece_patch - np.concatenate([[0], np.cumsum(tp[window_of])])[:-1],
                        tp[window_of]) + np.arange(int(tp[window_of].sum()))  # [Σ patches] flat patch index
        sample_id = np.zeros(batch_size * n_cap, dtype=np.int64)
        variate_id = np.zeros(batch_size * n_cap, dtype=np.int64)
        sample_id[pos] = np.repeat(ids[window_of], tp[window_of])
        variate_id[pos] = np.repeat(np.where(piece_kept, piece_var, 0), tp[window_of])
        missing = ~kept
        counts = np.asarray([int(kept.sum()), int(missing.sum()), batch_size * n_cap - int(patches[kept].sum()),
                             _leading_run(missing), _longest_run(missing), _leading_run(missing[::-1]),
                             len(kept), int((kept & (group >= 0)).sum())], dtype=np.int64)
        return {"target": torch.from_numpy(target.reshape(batch_size, n_cap * p)),
                "sample_id": torch.from_numpy(sample_id.reshape(batch_size, n_cap)),
                "variate_id": torch.from_numpy(variate_id.reshape(batch_size, n_cap)),
                "counts": torch.from_numpy(counts)}


def _within(sizes: np.ndarray) -> np.ndarray:
    """0..n-1 for each n of `sizes`, concatenated."""
    return np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes)
