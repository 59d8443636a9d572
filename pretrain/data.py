"""Pretraining batches: mixture sampling, random windows, packing (docs/ARCHITECTURE.md §4).

A packed row holds N = model.max_seq_len patches of P = patch_size values. Windows of random length
are cropped from series drawn by dataset mixture weights and laid one after another, each starting at
a patch boundary; `sample_id` numbers them 1..m per patch (0 = padding) and the unused tail of a
window's last patch is NaN. The sampler draws from one numpy Generator; its state and counters form
`state_dict()`, so a run resumed from a checkpoint sees exactly the batches of an uninterrupted one.
The corpus itself (folder, schema, manifest, the memory-mapped `Corpus`) is data_prep/corpus.py; multivariate
groups (`train.multivariate_share`) are drawn by pretrain/variate_groups.py through `WindowSampler.draw_window`.

Shape legend: B rows per batch, N patches per row, P patch size, R corpus rows (series).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from data_prep.corpus import Corpus, CorpusError

MAX_CONSECUTIVE_SKIPS = 1000  # all-missing windows in a row before the corpus is declared unusable


# Synthetic sources a config may name that an older or smaller corpus lacks; the error says how to add them.
_SYNTHETIC_HINT = ("; the synthetic sources synthetic, kernelsynth, periodic and tsmixup are added by `moe-ts prepare "
                   "--synthetic-count N --kernelsynth-count N --periodic-count N --tsmixup-count N`")


def mixture_probabilities(
    names: list[str], series_counts: list[int], mixture: dict[str, float], default: str,
    point_counts: list[int] | None = None, shares: dict[str, float] | None = None,
    scale: dict[str, float] | None = None,
) -> np.ndarray:
    """Probability of drawing each dataset in `names`.

    Empty `mixture`: proportional to `series_counts` (default "series") or its square root ("sqrt_series"),
    to the observed values `point_counts` ("points"), to their square root ("sqrt_points", tempered), or
    uniform ("uniform"), times `scale[name]` (the corpus manifest's weights, uni2ts' weight map: 1 for a
    dataset not named, names absent from `names` ignored); datasets named in `shares` get exactly that
    probability and the others share the rest by that rule. Otherwise the given weights, 0 for datasets not
    named; naming a dataset absent from `names` raises.
    """
    shares = shares or {}
    unknown = sorted(set(shares) - set(names))
    if unknown:
        raise CorpusError(f"train.mixture_share names dataset(s) {unknown} that the corpus lacks or whose series "
                          f"are all missing (corpus datasets: {names}){_SYNTHETIC_HINT}")
    if shares:
        rest = [n for n in names if n not in shares]
        keep = [names.index(n) for n in rest]
        probs = np.zeros(len(names))
        if rest:
            probs[keep] = (1.0 - sum(shares.values())) * mixture_probabilities(
                rest, [series_counts[i] for i in keep], {}, default,
                None if point_counts is None else [point_counts[i] for i in keep], scale=scale)
        for name, share in shares.items():
            probs[names.index(name)] = share
        if probs.sum() <= 0:
            raise CorpusError(f"train.mixture_share gives every corpus dataset weight 0 (corpus datasets: {names})")
        return probs / probs.sum()
    if mixture:
        unknown = sorted(set(mixture) - set(names))
        if unknown:
            raise CorpusError(f"train.mixture names dataset(s) {unknown} that the corpus lacks or whose series "
                              f"are all missing (corpus datasets: {names})")
        weights = np.asarray([float(mixture.get(n, 0.0)) for n in names])
    elif default in ("series", "sqrt_series"):
        weights = np.asarray(series_counts, dtype=np.float64)
        if default == "sqrt_series":
            weights = np.sqrt(weights)
    elif default in ("points", "sqrt_points"):
        if point_counts is None:
            raise ValueError(f"mixture_default {default!r} needs point_counts")
        weights = np.asarray(point_counts, dtype=np.float64)
        if default == "sqrt_points":
            weights = np.sqrt(weights)
    elif default == "uniform":
        weights = np.ones(len(names))
    else:
        raise ValueError(f"unknown mixture_default {default!r}")
    if scale and not mixture:
        weights = weights * np.asarray([float(scale.get(n, 1.0)) for n in names])
    if weights.sum() <= 0:
        raise CorpusError(f"train.mixture gives every corpus dataset weight 0 (corpus datasets: {names})")
    return weights / weights.sum()


def series_weights(lengths: np.ndarray, window_len: int, cap: int) -> np.ndarray:
    """Draw weight of each series: its number of full-length windows, ceil(length / window_len), capped."""
    return np.minimum(np.ceil(lengths / window_len), cap).astype(np.float64)


def sample_window(rng: np.random.Generator, length: int, min_len: int, max_len: int) -> tuple[int, int]:
    """(start, window length): length uniform in [min(length, min_len), min(length, max_len)], start uniform."""
    hi = min(length, max_len)
    lo = min(length, min_len, hi)
    wlen = int(rng.integers(lo, hi + 1))
    start = int(rng.integers(0, length - wlen + 1))
    return start, wlen


def pack_windows(windows: list[np.ndarray], seq_patches: int, patch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Lay windows one after another from patch boundaries into one row.

    Returns target [N·P] float32 (NaN where nothing or a missing value lies) and sample_id [N] int64
    (window i covers ceil(len_i / P) patches with id i+1; 0 = padding).
    """
    target = np.full(seq_patches * patch_size, np.nan, dtype=np.float32)
    sample_id = np.zeros(seq_patches, dtype=np.int64)
    cursor = 0  # in patches
    for i, window in enumerate(windows):
        n = math.ceil(len(window) / patch_size)
        if n == 0:
            raise ValueError(f"window {i} is empty")
        if cursor + n > seq_patches:
            raise ValueError(f"windows need more than {seq_patches} patches of {patch_size}")
        target[cursor * patch_size:cursor * patch_size + len(window)] = window
        sample_id[cursor:cursor + n] = i + 1
        cursor += n
    return target, sample_id


def window_patches(window: np.ndarray, patch_size: int) -> int:
    """Patches a window takes in a packed row: ceil(T / P) for a series [T], V·ceil(T / P) for a group [V, T]."""
    variates = 1 if window.ndim == 1 else window.shape[0]
    return variates * math.ceil(window.shape[-1] / patch_size)


def _draw(rng: np.random.Generator, cumulative: np.ndarray) -> int:
    """Index drawn with probabilities proportional to the increments of `cumulative`."""
    return min(int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right")), len(cumulative) - 1)


class SeriesIndex:
    """Which corpus rows a sampler draws from and with which weights: dataset by mixture probability, then a series
    of that dataset by its (capped) window count. Shared by the sequential and the vectorised samplers.

    Shape legend: R corpus rows, U usable rows (observed values, not covariates), D datasets with usable rows."""

    def __init__(self, corpus: Corpus, *, window_len: int, max_windows_per_series: int = 16,
                 mixture: dict[str, float] | None = None, mixture_default: str = "series",
                 mixture_share: dict[str, float] | None = None,
                 dataset_weights: dict[str, float] | None = None) -> None:
        usable = corpus.n_observed > 0
        self.num_unusable = int((~usable).sum())
        self.num_covariates = 0
        if corpus.covariate is not None:  # covariate rows are stored, never drawn as targets
            self.num_covariates = int(corpus.covariate.sum())
            usable &= ~corpus.covariate
        if not usable.any():
            raise CorpusError(f"{corpus.path}: all {len(corpus)} series are empty or entirely missing")
        rows = np.flatnonzero(usable)
        codes = corpus.dataset_index[rows]
        order = np.argsort(codes, kind="stable")  # rows grouped by dataset, corpus order inside each group
        rows_u, codes_u = rows[order], codes[order]
        present, first = np.unique(codes_u, return_index=True)  # ascending codes: the datasets in name order
        bounds = np.append(first, len(rows_u))
        self.dataset_names = [corpus.dataset_names[c] for c in present]
        self.dataset_rows: list[np.ndarray] = [rows_u[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        weights_u = series_weights(corpus.lengths[rows_u], window_len, max_windows_per_series)  # [U]
        self.series_cumweights = [np.cumsum(weights_u[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
        counts = [len(r) for r in self.dataset_rows]
        points = [int(corpus.n_observed[r].sum()) for r in self.dataset_rows]
        self.dataset_probs = mixture_probabilities(self.dataset_names, counts, mixture or {}, mixture_default, points,
                                                   mixture_share, dataset_weights)
        self.dataset_cum = np.cumsum(self.dataset_probs)  # [D]
        # The same draw over all usable rows at once (the vectorised sampler): rows grouped by dataset, one
        # cumulative weight over them, and each dataset's [start, end) in it.
        self.rows = rows_u  # [U]
        self.cumweights = np.cumsum(weights_u)  # [U]
        self.bounds = bounds  # [D + 1]


class PackedSampler:
    """What both samplers share: the corpus, the row geometry (N patches of P values), the `SeriesIndex`, the
    counters and the fingerprint a saved state must match. Subclasses make the batches."""

    kind: str | None = None  # recorded in the fingerprint (None: the sequential sampler, as its states always were)

    def __init__(
        self,
        corpus: Corpus,
        *,
        patch_size: int,
        seq_patches: int,
        min_window_patches: int = 2,
        max_windows_per_series: int = 16,
        mixture: dict[str, float] | None = None,
        mixture_default: str = "series",
        mixture_share: dict[str, float] | None = None,
        dataset_weights: dict[str, float] | None = None,
        seed: int = 0,
        rank: int = 0,
    ) -> None:
        if not 1 <= min_window_patches <= seq_patches:
            raise ValueError(f"min_window_patches={min_window_patches} must be in 1..{seq_patches}")
        self.corpus = corpus
        self.patch_size = patch_size
        self.seq_patches = seq_patches
        self.min_window_patches = min_window_patches
        self.index = SeriesIndex(corpus, window_len=seq_patches * patch_size,
                                 max_windows_per_series=max_windows_per_series, mixture=mixture,
                                 mixture_default=mixture_default, mixture_share=mixture_share,
                                 dataset_weights=dataset_weights)
        self.num_unusable, self.num_covariates = self.index.num_unusable, self.index.num_covariates
        self.dataset_names, self.dataset_probs = self.index.dataset_names, self.index.dataset_probs
        self.seed, self.rank = seed, rank
        self.rows = 0  # packed rows produced
        self.windows = 0  # windows packed
        self.skipped = 0  # all-missing windows drawn and discarded (sequential) or made padding (vectorised)
        self.padding = 0  # padding patches produced

    def fingerprint(self) -> dict[str, Any]:
        """What a saved state must agree on to be resumed here."""
        return {
            **({"sampler": self.kind} if self.kind else {}),
            "num_series": len(self.corpus),
            "datasets": self.dataset_names,
            "dataset_probs": [round(float(p), 12) for p in self.dataset_probs],
            "patch_size": self.patch_size,
            "seq_patches": self.seq_patches,
            "min_window_patches": self.min_window_patches,
            "seed": self.seed,
            "rank": self.rank,
        }

    def check_state(self, state: dict[str, Any]) -> None:
        """CorpusError naming what differs when `state` was saved by another corpus, config or sampler."""
        mine = self.fingerprint()
        theirs = state.get("fingerprint") or {}
        if theirs != mine:
            diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            raise CorpusError(f"saved sampler state does not match this corpus/config (differs in: {diff})")


class WindowSampler(PackedSampler):
    """Deterministic, resumable source of packed batches {target [B, N·P], sample_id [B, N]}, one window at a
    time from one numpy Generator (its state is the checkpointed state)."""

    def __init__(self, corpus: Corpus, **kwargs: Any) -> None:
        super().__init__(corpus, **kwargs)
        self.dataset_rows, self.series_cumweights = self.index.dataset_rows, self.index.series_cumweights
        self._dataset_cum = self.index.dataset_cum
        self.rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(self.rank,)))

    def draw_series(self) -> int:
        """A corpus row: dataset by mixture weight, then series by (capped) window count."""
        d = _draw(self.rng, self._dataset_cum)
        return int(self.dataset_rows[d][_draw(self.rng, self.series_cumweights[d])])

    def draw_window(self, remaining: int) -> tuple[np.ndarray, int]:
        """(window, corpus row) of at most `remaining` patches: a series' values [T], NaN = missing. Subclasses
        (`pretrain.variate_groups.AnyVariateSampler`) may return a group's window [V, T] instead."""
        row = self.draw_series()
        values = self.corpus.values(row)
        start, wlen = sample_window(self.rng, len(values), self.min_window_patches * self.patch_size,
                                    remaining * self.patch_size)
        return values[start:start + wlen], row

    def next_windows(self) -> list[np.ndarray]:
        """Windows for one packed row: drawn until fewer than min_window_patches patches remain free."""
        p = self.patch_size
        remaining = self.seq_patches
        windows: list[np.ndarray] = []
        consecutive_skips = 0
        while remaining >= self.min_window_patches:
            window, row = self.draw_window(remaining)
            if np.isnan(window).all():
                self.skipped += 1
                consecutive_skips += 1
                if consecutive_skips >= MAX_CONSECUTIVE_SKIPS:
                    raise CorpusError(f"{self.corpus.path}: {MAX_CONSECUTIVE_SKIPS} consecutive windows were "
                                      f"entirely missing (last: series {self.corpus.item_id[row]!r})")
                continue
            consecutive_skips = 0
            windows.append(window)
            remaining -= window_patches(window, p)
        self.windows += len(windows)
        self.padding += remaining
        return windows

    def next_batch(self, batch_size: int) -> dict[str, torch.Tensor]:
        """`batch_size` packed rows: target [B, N·P] float32, sample_id [B, N] int64."""
        targets, ids = [], []
        for _ in range(batch_size):
            t, s = pack_windows(self.next_windows(), self.seq_patches, self.patch_size)
            targets.append(t)
            ids.append(s)
            self.rows += 1
        return {"target": torch.from_numpy(np.stack(targets)), "sample_id": torch.from_numpy(np.stack(ids))}

    def state_dict(self) -> dict[str, Any]:
        """RNG state and counters (JSON-serialisable)."""
        return {
            "rng": self.rng.bit_generator.state,
            "rows": self.rows,
            "windows": self.windows,
            "skipped": self.skipped,
            "padding": self.padding,
            "fingerprint": self.fingerprint(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue exactly where `state` was taken; refuses a state from another corpus or config."""
        self.check_state(state)
        self.rng.bit_generator.state = state["rng"]
        self.rows, self.windows = int(state["rows"]), int(state["windows"])
        self.skipped, self.padding = int(state["skipped"]), int(state["padding"])
