"""Training and validation windows for distillation (docs/ARCHITECTURE.md §8).

A window is (context of L points, truth of the next H points). Where they come from:
- `--dataset NAME`, LSF set: every channel standardised with its training split's statistics (as the LSF
  protocol, `data_prep.registry.lsf_normalise`); training windows have their targets inside the training split,
  validation windows inside the validation split (`data_prep.registry.lsf_val_span`); the test split is
  never read.
- `--dataset NAME`, Monash / zero-shot set: the part of each series before its test span
  (`data_prep.registry.test_span`); validation = the last H points of that part, training = windows whose
  targets end before them.
- `--data CORPUS` (from `moe-ts prepare`, test spans already cut away): like a Monash set.
Windows start every `stride` points and are thinned evenly to at most `max_windows`; windows without an
observed context value or target value are dropped. A source without one training window is an error
naming the longest series.

Shape legend: N windows, L context length, H horizon.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class DistillDataError(ValueError):
    """The distillation data cannot give training / validation windows."""


@dataclass
class WindowSet:
    """Windows of one split: contexts [N, L] and truths [N, H] (float32, NaN = missing)."""

    contexts: np.ndarray
    truth: np.ndarray

    def __len__(self) -> int:
        return len(self.contexts)


@dataclass
class DistillData:
    """The training and validation windows and a line saying where they came from."""

    train: WindowSet
    val: WindowSet
    description: str


def thin(starts: np.ndarray, max_windows: int | None) -> np.ndarray:
    """At most `max_windows` of `starts`, evenly spaced (all when None)."""
    if max_windows is None or len(starts) <= max_windows:
        return starts
    return starts[np.unique(np.linspace(0, len(starts) - 1, max_windows).round().astype(np.int64))]


def cut_windows(values: list[np.ndarray], spans: list[tuple[int, int]], context: int, horizon: int, stride: int,
                max_windows: int | None) -> WindowSet:
    """Windows whose H targets lie inside each series' [lo, hi) with L context points before them."""
    refs = []  # (series, forecast start)
    for k, (v, (lo, hi)) in enumerate(zip(values, spans)):
        first = max(lo, context)
        refs.extend((k, t) for t in range(first, hi - horizon + 1, stride))
    picked = [refs[i] for i in thin(np.arange(len(refs)), max_windows)]
    ctx = np.array([values[k][t - context:t] for k, t in picked], dtype=np.float32).reshape(-1, context)
    truth = np.array([values[k][t:t + horizon] for k, t in picked], dtype=np.float32).reshape(-1, horizon)
    keep = ~np.isnan(ctx).all(axis=1) & ~np.isnan(truth).all(axis=1)
    return WindowSet(ctx[keep], truth[keep])


def _too_short(what: str, values: list[np.ndarray], context: int, horizon: int, split: str) -> DistillDataError:
    longest = max((len(v) for v in values), default=0)
    return DistillDataError(f"{what}: no {split} window: a window needs context + horizon = {context} + {horizon} = "
                            f"{context + horizon} points (longest series: {longest} points before the held-out part); "
                            "use a shorter --context")


def _last_part_windows(what: str, values: list[np.ndarray], context: int, horizon: int, stride: int,
                       max_windows: int | None, max_val: int | None) -> tuple[WindowSet, WindowSet]:
    """Validation: the last H points of each series; training: windows ending before them."""
    train_spans = [(0, len(v) - horizon) for v in values]
    val_spans = [(len(v) - horizon, len(v)) for v in values]
    train = cut_windows(values, train_spans, context, horizon, stride, max_windows)
    val = cut_windows(values, val_spans, context, horizon, horizon, max_val)
    if len(train) == 0:
        before_val = [v[:max(0, len(v) - horizon)] for v in values]
        raise _too_short(what, before_val, context, horizon, "training")
    if len(val) == 0:
        raise _too_short(what, values, context, horizon, "validation")
    return train, val


def dataset_windows(name: str, data_dir: str | os.PathLike[str] | None, context: int, horizon: int, stride: int = 1,
                    max_windows: int | None = None, max_val: int | None = None) -> DistillData:
    """Windows of a registered dataset (module docstring); its test span is never read."""
    from data_prep import registry

    spec = registry.get_spec(name)
    series = registry.load_series(spec, data_dir)
    what = f"--dataset {spec.name}"
    if "lsf" in spec.suites:
        length = len(series[0])
        train_end = registry.lsf_train_end(spec, length)
        val_lo, val_hi = registry.lsf_val_span(spec, length)
        values = [registry.lsf_normalise(s.target, train_end, f"{spec.name} {s.item_id}")[:val_hi] for s in series]
        train = cut_windows(values, [(0, train_end)] * len(values), context, horizon, stride, max_windows)
        val = cut_windows(values, [(val_lo, val_hi)] * len(values), context, horizon, stride, max_val)
        if len(train) == 0:
            raise _too_short(what, [v[:train_end] for v in values], context, horizon, "training")
        if len(val) == 0:
            raise _too_short(what, values, context, horizon, "validation")
        desc = (f"{spec.name} (LSF): {len(values)} channels standardised by the training split; training targets in "
                f"[0, {train_end}), validation targets in [{val_lo}, {val_hi}); stride {stride}")
    else:
        values = []
        for s in series:
            start, _ = registry.test_span(spec, len(s))
            values.append(np.asarray(s.target, dtype=np.float64)[:start])
        train, val = _last_part_windows(what, values, context, horizon, stride, max_windows, max_val)
        desc = (f"{spec.name}: {len(values)} series before their test spans; validation = the last {horizon} "
                f"points of each; stride {stride}")
    return DistillData(train, val, desc + f"; {len(train)} training / {len(val)} validation windows")


def corpus_windows(path: str | Path, context: int, horizon: int, stride: int = 1, max_windows: int | None = None,
                   max_val: int | None = None) -> DistillData:
    """Windows of an Arrow corpus (`moe-ts prepare`): validation = the last H points of each series."""
    from data_prep.corpus import open_corpus

    corpus = open_corpus(path)
    values = [np.asarray(corpus.values(i), dtype=np.float64) for i in range(len(corpus))]
    train, val = _last_part_windows(f"--data {path}", values, context, horizon, stride, max_windows, max_val)
    desc = f"corpus {path}: {len(values)} series; validation = the last {horizon} points of each; stride {stride}"
    return DistillData(train, val, desc + f"; {len(train)} training / {len(val)} validation windows")
