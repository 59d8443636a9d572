"""Finetuning data (docs/ARCHITECTURE.md §9): a dataset's protocol splits and the windows drawn from them.

An LSF dataset (`--dataset NAME`) is split as its evaluation protocol splits it (ETT: 12 / 4 / 4
months; other LSF sets 0.7 / 0.1 / 0.2); a user's LSF CSV (`--csv FILE`: a `date` column and one column
per variate) by the 0.7 / 0.1 / 0.2 rule. Every channel is normalised with its training split's mean
and standard deviation (the values the evaluation's contexts carry). Training windows are drawn uniformly
from the training split; validation windows lie wholly inside the validation split (every half window),
so the early-stopping signal never sees training or test points.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class Splits:
    """Normalised channels of one dataset, cut at the protocol's borders."""

    name: str
    train: list[np.ndarray]
    val: list[np.ndarray]
    borders: tuple[int, int, int]  # train end, test start, series length
    series: list = field(default_factory=list, repr=False)  # the raw channels (data_prep Series), for the test tasks


def lsf_splits(name: str, data_dir: str | os.PathLike[str] | None = None) -> Splits:
    """Train / validation splits of a registered LSF dataset (raises naming the dataset when it is not one)."""
    from data_prep import registry
    from data_prep.registry import lsf_normalise

    spec = registry.get_spec(name)
    if "lsf" not in spec.suites:
        raise ValueError(f"--dataset {name}: not an LSF dataset (finetuning splits follow the LSF protocol; "
                         f"choose from {', '.join(registry.list_suite('lsf'))})")
    series = registry.load_series(spec, data_dir)
    length = len(series[0])
    train_end = registry.lsf_train_end(spec, length)
    test_start, _ = registry.test_span(spec, length)
    values = [lsf_normalise(s.target, train_end, f"{name} channel {s.item_id!r}").astype(np.float32) for s in series]
    return Splits(spec.name, [v[:train_end] for v in values], [v[train_end:test_start] for v in values],
                  (train_end, test_start, length), series)


def csv_splits(path: str | os.PathLike[str]) -> Splits:
    """Train / validation splits of a user's LSF CSV by the 0.7 / 0.1 / 0.2 rule (Autoformer's "custom")."""
    from pathlib import Path

    from data_prep.readers.lsf_csv import read_lsf_csv
    from data_prep.registry import lsf_normalise

    path = Path(path)
    series = read_lsf_csv(path, dataset=path.stem)
    lengths = {len(s) for s in series}
    if len(lengths) != 1:
        raise ValueError(f"{path}: the columns must share one length, got {sorted(lengths)}")
    length = lengths.pop()
    train_end, test_start = int(length * 0.7), length - int(length * 0.2)
    values = [lsf_normalise(s.target, train_end, f"{path} column {s.item_id!r}").astype(np.float32) for s in series]
    return Splits(path.stem, [v[:train_end] for v in values], [v[train_end:test_start] for v in values],
                  (train_end, test_start, length), series)


def check_window(splits: Splits, window: int, what: str) -> None:
    """One-line error when a split cannot hold a single finetuning window."""
    for part, arrays in (("training", splits.train), ("validation", splits.val)):
        shortest = min(len(a) for a in arrays)
        if shortest < window:
            raise ValueError(f"{splits.name}: the {part} split has {shortest} points, shorter than one finetuning "
                             f"window of {window} ({what})")


class TrainWindows:
    """Random windows [B, window] of the training split (channel and start uniform over valid positions)."""

    def __init__(self, arrays: list[np.ndarray], window: int, seed: int = 0) -> None:
        self.arrays, self.window = arrays, window
        self.counts = np.array([len(a) - window + 1 for a in arrays])
        self.cum = np.cumsum(self.counts)
        self.rng = np.random.default_rng(seed)

    def batch(self, batch_size: int) -> torch.Tensor:
        picks = self.rng.integers(0, self.cum[-1], size=batch_size)
        rows = []
        for p in picks:
            c = int(np.searchsorted(self.cum, p, side="right"))
            start = int(p - (self.cum[c - 1] if c else 0))
            rows.append(self.arrays[c][start:start + self.window])
        return torch.from_numpy(np.stack(rows))


def val_windows(arrays: list[np.ndarray], window: int, max_windows: int = 64) -> torch.Tensor:
    """Fixed validation windows [V, window]: every half window of every channel, thinned evenly to `max_windows`."""
    rows = [a[s:s + window] for a in arrays for s in range(0, len(a) - window + 1, max(1, window // 2))]
    if len(rows) > max_windows:
        rows = [rows[i] for i in np.unique(np.linspace(0, len(rows) - 1, max_windows).round().astype(int))]
    return torch.from_numpy(np.stack(rows))
