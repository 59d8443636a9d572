"""Any-variate pretraining batches (`train.multivariate_share`; docs/ARCHITECTURE.md §4): multivariate groups drawn
beside univariate series and packed variate-major, as uni2ts packs them.

A group is the target rows of one dataset that share a non-empty `group_id` (a multivariate source row that
`moe-ts prepare` split into one row per variate), in `variate` order. Covariate rows, rows without an observed value
and groups of a single target row are left out, and so is a group whose variates differ in length: the readers
write a group's variates from one source row, so they start together, and unequal lengths mean the rows were cut
apart.

Each window slot of a row is, with probability `multivariate_share` (when at least two windows of
`min_window_patches` fit), a group window instead of a series window: a dataset by the run's mixture probabilities
(renormalised over the datasets that have groups), a group of it by its capped window count, V variates uniform in
2..min(group size, max_variates, what fits) as a random subset in variate order (uni2ts' SampleDimension, which draws
1..min(size, max_dim) in a random order: one variate is a series draw here, and the order is immaterial, since the
mask goes by time id and the variate bias only compares ids), and one time window [start, start + T) shared by the V
variates. It takes V·ceil(T / P) patches: the variates one after
another, each from a patch boundary, all with the window's sample id, variate ids 0..V-1. Variates entirely missing
in the window are dropped. `moe_ts.objectives.pretrain_loss` takes the variate ids (`variate_id`) and gives each
variate its own statistics and loss, time ids shared by the variates and causality by time id.

Shape legend: R corpus rows, G groups, M member rows of all groups, N patches per row, P patch size, V variates,
T window length in values.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.compute as pc
import torch

from data_prep.corpus import Corpus, CorpusError
from pretrain.data import SeriesIndex, WindowSampler, sample_window, series_weights


@dataclass
class VariateGroups:
    """The multivariate groups of a corpus and their draw weights."""

    members: np.ndarray  # [M] corpus rows, group after group, each group in variate order
    bounds: np.ndarray  # [G + 1] group g is members[bounds[g]:bounds[g + 1]]
    length: np.ndarray  # [G] the length shared by the group's variates
    dataset_cum: np.ndarray  # [D'] cumulative draw probability of the datasets that have groups
    dataset_groups: list[np.ndarray]  # D' arrays of group indices
    group_cumweights: list[np.ndarray]  # D' cumulative group weights (capped window counts)
    num_unaligned: int  # groups left out because their variates differ in length

    def __len__(self) -> int:
        return len(self.length)

    @classmethod
    def from_corpus(cls, corpus: Corpus, index: SeriesIndex, window_len: int, cap: int) -> "VariateGroups":
        """Groups of the rows `index` draws from (usable, not covariates), weighted as `index` weights series; a
        CorpusError when the corpus holds none that the mixture can draw."""
        usable = np.zeros(len(corpus), dtype=bool)
        usable[index.rows] = True
        group_code, variate = _group_columns(corpus.path, len(corpus))
        rows = np.flatnonzero(usable & (group_code >= 0))
        order = np.lexsort((rows, variate[rows], group_code[rows], corpus.dataset_index[rows]))
        rows = rows[order]
        key_d, key_g = corpus.dataset_index[rows], group_code[rows]
        new = np.ones(len(rows), dtype=bool)
        new[1:] = (key_d[1:] != key_d[:-1]) | (key_g[1:] != key_g[:-1])
        starts = np.flatnonzero(new)
        sizes = np.diff(np.append(starts, len(rows)))
        lengths = corpus.lengths[rows]
        if len(rows):
            lo, hi = np.minimum.reduceat(lengths, starts), np.maximum.reduceat(lengths, starts)
        else:
            lo = hi = np.zeros(0, dtype=np.int64)
        multi = sizes >= 2
        aligned = lo == hi
        keep = multi & aligned
        member_mask = np.repeat(keep, sizes)
        members = rows[member_mask]
        bounds = np.concatenate([[0], np.cumsum(sizes[keep])]).astype(np.int64)
        length = lo[keep].astype(np.int64)
        dataset = key_d[starts][keep]
        probs = dict(zip(index.dataset_names, index.dataset_probs))
        weights = series_weights(length, window_len, cap)
        codes, group_sets, cumweights, dataset_probs = [], [], [], []
        for code in np.unique(dataset):
            p = probs.get(corpus.dataset_names[code], 0.0)
            if p <= 0:
                continue
            mine = np.flatnonzero(dataset == code)
            codes.append(code)
            group_sets.append(mine)
            cumweights.append(np.cumsum(weights[mine]))
            dataset_probs.append(p)
        if not codes:
            raise CorpusError(f"{corpus.path}: train.multivariate_share > 0 but the corpus has no multivariate group "
                              f"that the mixture draws ({int(multi.sum())} groups of 2+ target rows sharing a "
                              f"group_id, {int((multi & ~aligned).sum())} of them with variates of unequal length)")
        dataset_cum = np.cumsum(np.asarray(dataset_probs) / sum(dataset_probs))
        return cls(members, bounds, length, dataset_cum, group_sets, cumweights, int((multi & ~aligned).sum()))

    def draw(self, rng: np.random.Generator) -> int:
        """A group: dataset by mixture probability, then group by (capped) window count."""
        d = _draw(rng, self.dataset_cum)
        return int(self.dataset_groups[d][_draw(rng, self.group_cumweights[d])])

    def rows(self, group: int) -> np.ndarray:
        """The corpus rows of `group`, in variate order."""
        return self.members[self.bounds[group]:self.bounds[group + 1]]


def check_variate_draws(multivariate_share: float, max_variates: int) -> None:
    """ValueError unless 0 < share <= 1 and max_variates >= 2 (an any-variate sampler's own arguments)."""
    if not 0.0 < multivariate_share <= 1.0:
        raise ValueError(f"multivariate_share must be in (0, 1], got {multivariate_share}")
    if max_variates < 2:
        raise ValueError(f"max_variates must be >= 2, got {max_variates}")


def _draw(rng: np.random.Generator, cumulative: np.ndarray) -> int:
    """Index drawn with probabilities proportional to the increments of `cumulative` (as pretrain.data draws)."""
    return min(int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right")), len(cumulative) - 1)


def _group_columns(path: Any, num_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """[R] group code (-1: no group: null or "") and [R] variate index (0 where the corpus predates the column)."""
    import datasets

    ds = datasets.load_from_disk(str(path))
    if "group_id" not in ds.column_names:
        return np.full(num_rows, -1, dtype=np.int64), np.zeros(num_rows, dtype=np.int64)
    cols = ["group_id"] + (["variate"] if "variate" in ds.column_names else [])
    table = ds.select_columns(cols).with_format("arrow")[:]
    if len(table) != num_rows:
        raise CorpusError(f"{path}: group columns hold {len(table)} rows, the targets {num_rows}")
    encoded = pc.dictionary_encode(table.column("group_id").combine_chunks())
    code = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    names = encoded.dictionary.to_pylist()
    if "" in names:
        code[code == names.index("")] = -1
    if "variate" in cols:
        variate = pc.fill_null(table.column("variate"), 0).to_numpy().astype(np.int64)
    else:
        variate = np.zeros(num_rows, dtype=np.int64)
    return code, variate


def pack_variate_windows(windows: list[np.ndarray], seq_patches: int,
                         patch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lay windows one after another into one row, a group's variates one after another (variate-major).

    A window is a series [T] or a group [V, T]. Returns target [N·P] float32 (NaN where nothing or a missing value
    lies), sample_id [N] int64 (window i's patches, all its variates', get id i+1; 0 = padding) and variate_id [N]
    int64 (0..V-1 over a group's variate blocks of ceil(T / P) patches each; 0 for a series and padding)."""
    target = np.full(seq_patches * patch_size, np.nan, dtype=np.float32)
    sample_id = np.zeros(seq_patches, dtype=np.int64)
    variate_id = np.zeros(seq_patches, dtype=np.int64)
    cursor = 0  # in patches
    for i, window in enumerate(windows):
        block = window[None] if window.ndim == 1 else window
        n = math.ceil(block.shape[1] / patch_size)
        if n == 0:
            raise ValueError(f"window {i} is empty")
        if cursor + n * len(block) > seq_patches:
            raise ValueError(f"windows need more than {seq_patches} patches of {patch_size}")
        for v, series in enumerate(block):
            target[cursor * patch_size:cursor * patch_size + len(series)] = series
            sample_id[cursor:cursor + n] = i + 1
            variate_id[cursor:cursor + n] = v
            cursor += n
    return target, sample_id, variate_id


class AnyVariateSampler(WindowSampler):
    """The sequential sampler with multivariate groups: batches {target [B, N·P], sample_id [B, N], variate_id
    [B, N]}; deterministic and resumable like `WindowSampler` (one numpy Generator)."""

    def __init__(self, corpus: Corpus, *, multivariate_share: float, max_variates: int = 128,
                 **kwargs: Any) -> None:
        check_variate_draws(multivariate_share, max_variates)
        super().__init__(corpus, **kwargs)
        self.multivariate_share, self.max_variates = float(multivariate_share), int(max_variates)
        self.groups = VariateGroups.from_corpus(corpus, self.index, self.seq_patches * self.patch_size,
                                                kwargs.get("max_windows_per_series", 16))
        self.group_windows = 0  # group windows packed

    def draw_window(self, remaining: int) -> tuple[np.ndarray, int]:
        """A group's window [V, T] with probability `multivariate_share` when two windows fit, else a series'."""
        min_wp = self.min_window_patches
        if remaining < 2 * min_wp or self.rng.random() >= self.multivariate_share:
            return super().draw_window(remaining)
        rows = self.groups.rows(self.groups.draw(self.rng))
        most = min(len(rows), self.max_variates, remaining // min_wp)
        v = int(self.rng.integers(2, most + 1))
        chosen = rows[np.sort(self.rng.choice(len(rows), size=v, replace=False))]
        length = int(self.corpus.lengths[chosen[0]])
        start, wlen = sample_window(self.rng, length, min_wp * self.patch_size, (remaining // v) * self.patch_size)
        window = np.stack([self.corpus.values(int(r))[start:start + wlen] for r in chosen])
        observed = ~np.isnan(window).all(axis=1)
        if observed.any():
            window = window[observed]  # a variate with nothing observed in the window would only take room
        return window, int(chosen[0])

    def next_windows(self) -> list[np.ndarray]:
        windows = super().next_windows()
        self.group_windows += sum(w.ndim == 2 for w in windows)
        return windows

    def next_batch(self, batch_size: int) -> dict[str, torch.Tensor]:
        """`batch_size` packed rows: target [B, N·P] float32, sample_id [B, N] int64, variate_id [B, N] int64."""
        packed = []
        for _ in range(batch_size):
            packed.append(pack_variate_windows(self.next_windows(), self.seq_patches, self.patch_size))
            self.rows += 1
        target, sample_id, variate_id = (torch.from_numpy(np.stack(x)) for x in zip(*packed))
        return {"target": target, "sample_id": sample_id, "variate_id": variate_id}

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), "multivariate_share": self.multivariate_share,
                "max_variates": self.max_variates, "groups": len(self.groups)}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "group_windows": self.group_windows}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.group_windows = int(state.get("group_windows", 0))

