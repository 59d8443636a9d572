"""Evaluation protocols (docs/ARCHITECTURE.md §6): turn a dataset's full series into test instances (context, truth).

- Monash / zero-shot ("last windows"): the test span is the last `windows × horizon` points of each
  series (`data_prep.registry.test_span`), cut into non-overlapping windows (stride = horizon). The
  context of a window is up to `context_length` points before it; the MASE/MSIS scale is the
  seasonal error of the *whole* history before the window (GluonTS convention).
- LSF: each channel is standardised with the mean/std of its training split (`lsf_train_end`),
  forecast targets start at every `stride`-th point of the standard test split (stride 1 = the
  published protocol), one task per horizon 96/192/336/720, metrics MSE/MAE on the normalised scale.

Instances are kept as (series index, forecast start) pairs; contexts and truths are sliced on demand,
so a stride-1 LSF task never materialises all of its windows at once. Any subsampling (`max_series`,
`max_windows`, `stride` > 1) and any dropped instance is recorded in `Task.sampling`, which the
reports print next to every number.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_prep.registry import lsf_normalise  # noqa: F401 - LSF scaling, shared with distillation
from data_prep.series import Series
from eval.metrics import seasonal_scale


@dataclass
class Sampling:
    """How a task's instances relate to the full published protocol."""

    series_total: int
    series_used: int
    windows_total: int  # forecast windows the protocol defines, over the series used
    windows_used: int
    stride: int = 1  # LSF window stride (the protocol's is 1; last-window protocols use stride = horizon)
    protocol_stride: int = 1
    dropped: list[str] = field(default_factory=list)  # reasons instances were left out (no observed context, ...)

    @property
    def is_full(self) -> bool:
        """True when nothing was subsampled (dropped undefined instances do not count as subsampling)."""
        return (
            self.series_used == self.series_total
            and self.windows_used == self.windows_total
            and self.stride == self.protocol_stride
        )

    def describe(self) -> str:
        """One line for the results files: 'full protocol' or what was subsampled, plus dropped instances."""
        parts = []
        if self.series_used != self.series_total:
            parts.append(f"{self.series_used} of {self.series_total} series")
        if self.stride != self.protocol_stride:
            parts.append(f"stride {self.stride} (protocol {self.protocol_stride})")
        if self.windows_used != self.windows_total:
            parts.append(f"{self.windows_used} of {self.windows_total} windows")
        text = "full protocol" if not parts else "SUBSAMPLED: " + ", ".join(parts)
        if self.dropped:
            text += "; dropped: " + ", ".join(self.dropped)
        return text


@dataclass
class Task:
    """One dataset at one horizon: its series and the (series, forecast start) of every test instance."""

    dataset: str
    display_name: str
    suite: str
    freq: str
    horizon: int
    seasonality: int
    context_length: int
    values: list[np.ndarray]  # full series (LSF: normalised), float64, NaN = missing
    item_ids: list[str]
    series_index: np.ndarray  # [N] int
    starts: np.ndarray  # [N] int: first forecast step of each instance
    sampling: Sampling
    with_scaled: bool = True  # MASE / MSIS defined (not for LSF, which reports MSE / MAE)
    group_size: int = 1  # > 1: instances come in consecutive groups (one start, every channel) forecast jointly

    def __len__(self) -> int:
        return len(self.starts)

    def contexts(self, idx: np.ndarray) -> list[np.ndarray]:
        """Contexts (up to context_length points before the start) of the instances `idx`."""
        out = []
        for s, t in zip(self.series_index[idx], self.starts[idx]):
            out.append(self.values[s][max(0, t - self.context_length) : t].astype(np.float32))
        return out

    def truth(self, idx: np.ndarray) -> np.ndarray:
        """[n, horizon] targets of the instances `idx`."""
        return np.stack([self.values[s][t : t + self.horizon] for s, t in zip(self.series_index[idx], self.starts[idx])])

    def scales(self, idx: np.ndarray) -> np.ndarray:
        """[n] MASE/MSIS scale: seasonal error of everything before each instance's start."""
        return np.array([seasonal_scale(self.values[s][:t], self.seasonality) for s, t in zip(self.series_index[idx], self.starts[idx])])

    def instance_id(self, i: int) -> str:
        """'item_id@start' of instance i."""
        return f"{self.item_ids[self.series_index[i]]}@{self.starts[i]}"


def _check_horizon(horizon: int, where: str) -> None:
    if horizon <= 0:
        raise ValueError(f"{where}: horizon must be > 0, got {horizon}")


def _drop_undefined(values: list[np.ndarray], si: np.ndarray, st: np.ndarray, horizon: int, context_length: int,
                    dropped: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Remove instances whose context has no observed value or whose truth is all missing; record counts."""
    keep = np.ones(len(st), dtype=bool)
    no_ctx = no_truth = 0
    for i, (s, t) in enumerate(zip(si, st)):
        if np.isnan(values[s][max(0, t - context_length) : t]).all():
            keep[i] = False
            no_ctx += 1
        elif np.isnan(values[s][t : t + horizon]).all():
            keep[i] = False
            no_truth += 1
    if no_ctx:
        dropped.append(f"{no_ctx} instances with no observed context value")
    if no_truth:
        dropped.append(f"{no_truth} instances with no observed target value")
    return si[keep], st[keep]


def last_window_task(
    name: str,
    series: list[Series],
    horizon: int,
    windows: int,
    context_length: int,
    seasonality: int,
    suite: str,
    display_name: str | None = None,
    max_series: int | None = None,
    max_windows: int | None = None,
    skip_short: bool = False,
) -> Task:
    """Monash / zero-shot protocol: the last `windows` non-overlapping windows of `horizon` points of each series.

    `max_series` keeps the first N series; `max_windows` keeps the last N windows of each series.
    A series too short to hold its test windows plus one context point raises ValueError naming it, or with
    `skip_short` (a user's file) is left out and named among the dropped instances.
    """
    _check_horizon(horizon, name)
    if windows < 1 or context_length < 1:
        raise ValueError(f"{name}: windows and context_length must be >= 1, got {windows}, {context_length}")
    if not series:
        raise ValueError(f"{name}: no series to evaluate")
    used = series[:max_series] if max_series else series
    keep_w = min(windows, max_windows) if max_windows else windows
    dropped: list[str] = []
    if skip_short:
        short = [s for s in used if len(s.target) - windows * horizon < 1]
        used = [s for s in used if len(s.target) - windows * horizon >= 1]
        if short:
            dropped.append(f"{len(short)} series too short for {windows} window(s) of {horizon} plus one context "
                           f"point ({', '.join(repr(s.item_id) for s in short[:3])}{', ...' if len(short) > 3 else ''})")
        if not used:
            raise ValueError(f"{name}: every series is too short for {windows} test window(s) of {horizon} after at "
                             f"least one context point")
    values = [np.asarray(s.target, dtype=np.float64) for s in used]
    si, st = [], []
    for k, v in enumerate(values):
        first = len(v) - windows * horizon
        if first < 1:
            raise ValueError(
                f"{name}: series {used[k].item_id!r} has {len(v)} points, too short for {windows} test window(s) of {horizon} after at least one context point"
            )
        for w in range(windows - keep_w, windows):
            si.append(k)
            st.append(first + w * horizon)
    si_a, st_a = _drop_undefined(values, np.array(si, dtype=np.int64), np.array(st, dtype=np.int64), horizon, context_length, dropped)
    sampling = Sampling(
        series_total=len(series), series_used=len(used), windows_total=len(used) * windows,
        windows_used=len(used) * keep_w, stride=horizon, protocol_stride=horizon, dropped=dropped,
    )
    return Task(
        dataset=name, display_name=display_name or name, suite=suite, freq=used[0].freq, horizon=horizon,
        seasonality=seasonality, context_length=context_length, values=values, item_ids=[s.item_id for s in used],
        series_index=si_a, starts=st_a, sampling=sampling, with_scaled=True,
    )


def lsf_starts(test_start: int, test_end: int, horizon: int, stride: int, max_windows: int | None) -> tuple[np.ndarray, int]:
    """Forecast starts of the LSF windows whose targets lie in [test_start, test_end), every `stride`-th,
    thinned evenly to at most `max_windows`; also the number the stride-1 protocol defines."""
    total = max(0, test_end - horizon + 1 - test_start)
    starts = np.arange(test_start, test_end - horizon + 1, stride, dtype=np.int64)
    if max_windows and len(starts) > max_windows:
        pick = np.unique(np.linspace(0, len(starts) - 1, max_windows).round().astype(np.int64))
        starts = starts[pick]
    return starts, total


def lsf_tasks(
    name: str,
    display_name: str,
    series: list[Series],
    horizons: tuple[int, ...],
    train_end: int,
    test_span: tuple[int, int],
    seasonality: int,
    context_length: int = 512,
    stride: int = 1,
    max_series: int | None = None,
    max_windows: int | None = None,
    multivariate: bool = False,
) -> list[Task]:
    """LSF protocol, one task per horizon: channels normalised with training-split statistics, stride-`stride`
    windows over the test split (`max_windows` thins them evenly), every channel scored on its own.

    `multivariate`: the model forecasts all channels of a window as one group (any-variate, `forecast_group`);
    instances are ordered window by window (`Task.group_size` = channels) and a window is dropped for every
    channel when one channel's instance is undefined. The scores are the same per-channel metrics."""
    if stride < 1:
        raise ValueError(f"{name}: LSF stride must be >= 1, got {stride}")
    if not series:
        raise ValueError(f"{name}: no series to evaluate")
    used = series[:max_series] if max_series else series
    lengths = {len(s) for s in used}
    if len(lengths) != 1:
        raise ValueError(f"{name}: LSF channels must share one length, got {sorted(lengths)}")
    values = [lsf_normalise(s.target, train_end, f"{name} channel {s.item_id!r}") for s in used]
    test_start, test_end = test_span
    tasks = []
    for h in horizons:
        _check_horizon(h, name)
        starts, total = lsf_starts(test_start, test_end, h, stride, max_windows)
        if len(starts) == 0:
            raise ValueError(f"{name}: test split [{test_start}, {test_end}) is shorter than horizon {h}")
        dropped: list[str] = []
        if multivariate:
            si, st = _whole_windows(values, starts, h, context_length, dropped)
        else:
            si = np.repeat(np.arange(len(used), dtype=np.int64), len(starts))
            st = np.tile(starts, len(used))
            si, st = _drop_undefined(values, si, st, h, context_length, dropped)
        sampling = Sampling(
            series_total=len(series), series_used=len(used), windows_total=len(used) * total,
            windows_used=len(used) * len(starts), stride=stride, protocol_stride=1, dropped=dropped,
        )
        tasks.append(Task(
            dataset=name, display_name=display_name, suite="lsf", freq=used[0].freq, horizon=h,
            seasonality=seasonality, context_length=context_length, values=values,
            item_ids=[s.item_id for s in used], series_index=si, starts=st, sampling=sampling, with_scaled=False,
            group_size=len(used) if multivariate else 1,
        ))
    return tasks


def _whole_windows(values: list[np.ndarray], starts: np.ndarray, horizon: int, context_length: int,
                   dropped: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(series index, start) of every channel at each start, window by window; a start where any channel's
    instance is undefined is dropped for all (the group is forecast as one)."""
    channels = len(values)
    si = np.tile(np.arange(channels, dtype=np.int64), len(starts))
    st = np.repeat(starts, channels)
    kept_si, kept_st = _drop_undefined(values, si, st, horizon, context_length, [])
    counts = np.bincount(np.searchsorted(starts, kept_st), minlength=len(starts))
    whole = starts[counts == channels]
    if len(whole) < len(starts):
        dropped.append(f"{len(starts) - len(whole)} windows with an undefined channel (multivariate mode)")
    return np.tile(np.arange(channels, dtype=np.int64), len(whole)), np.repeat(whole, channels)


LSF_SPLITS = ("test", "val")
LSF_MODES = ("per-channel", "multivariate")  # multivariate: all channels of a window as one group


@dataclass
class TaskOptions:
    """Run-wide protocol options (the CLI's flags)."""

    context_length: int | None = None  # None: the dataset's registered context length
    lsf_stride: int = 1
    lsf_split: str = "test"  # "val": targets in the validation split (data_prep.registry.lsf_val_span)
    lsf_mode: str = "per-channel"  # LSF_MODES
    max_series: int | None = None
    max_windows: int | None = None


def build_tasks(name: str, suite: str, data_dir: str | os.PathLike[str] | None, options: TaskOptions) -> list[Task]:
    """Load a registered dataset and build its tasks under `suite`'s protocol (raises DatasetMissingError)."""
    from data_prep import registry

    spec = registry.get_spec(name)
    series = registry.load_series(spec, data_dir)
    ctx = options.context_length or spec.context_length
    if suite == "lsf":
        length = len(series[0])
        if options.lsf_split not in LSF_SPLITS:
            raise ValueError(f"{spec.name}: LSF split must be one of {LSF_SPLITS}, got {options.lsf_split!r}")
        if options.lsf_mode not in LSF_MODES:
            raise ValueError(f"{spec.name}: LSF mode must be one of {LSF_MODES}, got {options.lsf_mode!r}")
        val = options.lsf_split == "val"
        multivariate = options.lsf_mode == "multivariate"
        span = registry.lsf_val_span(spec, length) if val else registry.test_span(spec, length)
        return lsf_tasks(
            spec.name, spec.display_name + (" [val]" if val else "") + (" [multivariate]" if multivariate else ""),
            series, spec.prediction_lengths, registry.lsf_train_end(spec, length), span, spec.seasonality, ctx,
            options.lsf_stride, options.max_series, options.max_windows, multivariate,
        )
    for s in series[: options.max_series or None]:
        start, end = registry.test_span(spec, len(s))
        if (start, end) != (len(s) - spec.windows * spec.prediction_length, len(s)):
            raise ValueError(
                f"{spec.name}: series {s.item_id!r} ({len(s)} points) cannot hold {spec.windows} test window(s) of {spec.prediction_length}"
            )
    return [
        last_window_task(
            spec.name, series, spec.prediction_length, spec.windows, ctx, spec.seasonality, suite,
            spec.display_name, options.max_series, options.max_windows,
        )
    ]


def tsf_task(
    path: str | os.PathLike[str],
    horizon: int | None = None,
    context_length: int = 1000,
    seasonality: int | None = None,
    windows: int = 1,
    max_series: int | None = None,
    max_windows: int | None = None,
) -> Task:
    """A Monash-format .tsf file under the last-window protocol, with its own @horizon (or `horizon`) and
    @frequency; seasonality defaults to the Monash convention for that frequency."""
    from data_prep.frequency import monash_seasonality
    from data_prep.readers.tsf import read_tsf

    path = Path(path)
    tsf = read_tsf(path)
    h = horizon if horizon is not None else tsf.horizon
    if h is None:
        raise ValueError(f"{path}: the file has no @horizon line; pass --horizon")
    _check_horizon(h, str(path))
    if not tsf.frequency:
        raise ValueError(f"{path}: the file has no @frequency line, needed for the seasonality")
    season = seasonality if seasonality is not None else monash_seasonality(tsf.frequency)
    return last_window_task(
        path.stem, tsf.series, h, windows, context_length, season, "tsf", path.name, max_series, max_windows,
        skip_short=True,
    )
