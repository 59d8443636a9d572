"""Zero-shot runner (docs/ARCHITECTURE.md §6): evaluate a forecaster and the Naive / Seasonal Naive baselines on the same
test instances of each dataset, streaming instances in chunks and accumulating dataset-level metrics.

Any object with the model's `forecast(contexts, prediction_length, num_samples=, quantile_levels=, seed=,
batch_size=) -> ForecastOutput` method is a forecaster (duck typing, `Forecaster`). A forecaster that
also has `for_seasonality(m)` (Seasonal Naive) is re-bound to each dataset's seasonality.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np

from eval.baselines import Naive, SeasonalNaive
from eval.metrics import CRPS_QUANTILES, MSIS_ALPHA, MetricAccumulator, MetricValue, select_levels
from eval.protocols import Task, TaskOptions, build_tasks
from moe_ts.forecast_output import ForecastOutput

# Quantile levels requested from every forecaster: CRPS's 0.1..0.9 plus the MSIS 95% interval bounds.
EVAL_QUANTILES: tuple[float, ...] = (MSIS_ALPHA / 2,) + CRPS_QUANTILES + (1.0 - MSIS_ALPHA / 2,)
PLOT_QUANTILES: tuple[float, ...] = (0.1, 0.5, 0.9)
# Roles in every result: the evaluated model and the two reference baselines.
MODEL, SNAIVE, NAIVE = "model", "seasonal_naive", "naive"
ROLES = (MODEL, SNAIVE, NAIVE)
# Baselines selectable by name (`--baselines`); Seasonal Naive always runs (every ratio is relative to it).
# The statsforecast ones (eval.classical) cost seconds to minutes per dataset, so they are opt-in.
BASELINE_NAMES: tuple[str, ...] = (SNAIVE, NAIVE, "autoets", "autotheta", "autoarima")
BASELINE_ALIASES: dict[str, str] = {"snaive": SNAIVE, "ets": "autoets", "theta": "autotheta", "arima": "autoarima"}
DEFAULT_BASELINES: tuple[str, ...] = (SNAIVE, NAIVE)


@runtime_checkable
class Forecaster(Protocol):
    """The forecasting interface shared by the model and the baselines."""

    def forecast(self, contexts: list[np.ndarray], prediction_length: int, **kwargs: Any) -> ForecastOutput: ...


@runtime_checkable
class SeasonalForecaster(Protocol):
    """A forecaster that must be told the dataset's seasonality."""

    def for_seasonality(self, season_length: int) -> Forecaster: ...


@dataclass
class EvalConfig:
    """Sampling and batching options shared by every task."""

    num_samples: int = 100
    batch_size: int = 64
    seed: int = 0
    chunk_size: int = 1024  # instances handed to forecast() at once (bounds memory)
    plot_series: int = 3  # forecasts kept per task for the plots
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # extra forecast() arguments for the model only


@dataclass
class PlotExample:
    """One forecast kept for plotting."""

    item_id: str
    context: np.ndarray
    truth: np.ndarray
    quantiles: np.ndarray  # [3, H] at PLOT_QUANTILES (0.1, 0.5, 0.9)


@dataclass
class TaskResult:
    """Metrics of every role on one task, with how the task's instances were chosen."""

    suite: str
    dataset: str
    display_name: str
    horizon: int
    context_length: int
    num_series: int
    num_instances: int
    sampling: str
    full_protocol: bool
    metrics: dict[str, dict[str, MetricValue]]  # role -> metric -> value
    seconds: dict[str, float]
    examples: list[PlotExample] = field(default_factory=list)


@dataclass
class MissingDataset:
    """A dataset whose files are absent: reported, never silently skipped."""

    suite: str
    dataset: str
    message: str

    @classmethod
    def of(cls, suite: str, dataset: str, err: Exception) -> "MissingDataset":
        """The record of a DatasetMissingError: its message from "missing:" on (the paths), or all of it."""
        msg = str(err)
        return cls(suite, dataset, msg[msg.find("missing:"):] if "missing:" in msg else msg)


@dataclass
class SuiteResult:
    """Everything one suite produced."""

    suite: str
    tasks: list[TaskResult] = field(default_factory=list)
    missing: list[MissingDataset] = field(default_factory=list)


class Progress(Protocol):
    """Where finished datasets are kept for a resume (eval/resume.py's EvalProgress)."""

    def finished(self, suite: str, dataset: str) -> list[TaskResult] | None: ...

    def record(self, suite: str, dataset: str, tasks: list[TaskResult]) -> None: ...


def _bind(forecaster: Forecaster, seasonality: int) -> Forecaster:
    return forecaster.for_seasonality(seasonality) if isinstance(forecaster, SeasonalForecaster) else forecaster


def _check_output(out: ForecastOutput, n: int, horizon: int, role: str, task: Task) -> None:
    where = f"{task.dataset} (h={horizon}), {role}"
    if out.mean.shape != (n, horizon):
        raise ValueError(f"{where}: forecast mean has shape {out.mean.shape}, expected {(n, horizon)}")
    if out.quantiles.shape[0] != n or out.quantiles.shape[2] != horizon:
        raise ValueError(f"{where}: forecast quantiles have shape {out.quantiles.shape}, expected ({n}, Q, {horizon})")
    if not np.all(np.isfinite(out.quantiles)) or not np.all(np.isfinite(out.mean)):
        raise ValueError(f"{where}: forecast contains NaN or inf")


def _example_indices(task: Task, k: int) -> list[int]:
    """Up to k instances from distinct series (the last window of each), for plots."""
    seen: dict[int, int] = {}
    for i, s in enumerate(task.series_index):
        seen[int(s)] = i
    return sorted(seen.values())[:k]


def evaluate_task(task: Task, forecasters: dict[str, Forecaster], cfg: EvalConfig,
                  log: Callable[[str], None] | None = None) -> TaskResult:
    """Run each role's forecaster over every instance of `task` and accumulate its metrics."""
    metrics: dict[str, dict[str, MetricValue]] = {}
    seconds: dict[str, float] = {}
    keep = set(_example_indices(task, cfg.plot_series))
    examples: list[PlotExample] = []
    notes: list[str] = []
    n = len(task)
    if n == 0:
        raise ValueError(f"{task.dataset} (h={task.horizon}): no test instance left ({task.sampling.describe()})")
    chunk_size = cfg.chunk_size if task.group_size == 1 else max(cfg.chunk_size // task.group_size, 1) * task.group_size
    for role, forecaster in forecasters.items():
        bound = _bind(forecaster, task.seasonality)
        if role == MODEL and task.group_size > 1:  # the LSF multivariate mode: a window's channels as one group
            from eval.multivariate import GroupForecaster

            bound = GroupForecaster(bound, task.group_size)
        extra = cfg.model_kwargs if role == MODEL else {}
        acc = MetricAccumulator(EVAL_QUANTILES, with_scaled=task.with_scaled)
        t0 = time.perf_counter()
        from tqdm import tqdm

        chunks = range(0, n, chunk_size)
        for c, lo in enumerate(tqdm(chunks, desc=f"  {task.dataset} h={task.horizon} {role}", unit="batch",
                                    leave=False, disable=None if len(chunks) > 1 else True)):
            idx = np.arange(lo, min(n, lo + chunk_size))
            contexts = task.contexts(idx)
            truth = task.truth(idx)
            out = bound.forecast(
                contexts, task.horizon, num_samples=cfg.num_samples, quantile_levels=EVAL_QUANTILES,
                seed=cfg.seed + c, batch_size=cfg.batch_size, **extra,
            )
            _check_output(out, len(idx), task.horizon, role, task)
            scales = task.scales(idx) if task.with_scaled else None
            q_eval = select_levels(out.quantiles, tuple(out.quantile_levels), EVAL_QUANTILES)
            acc.update(truth, out.median, out.mean, q_eval, scales, out.samples)
            if role == MODEL:
                q = select_levels(out.quantiles, tuple(out.quantile_levels), PLOT_QUANTILES)
                for j, i in enumerate(idx):
                    if int(i) in keep:
                        examples.append(PlotExample(task.instance_id(int(i)), contexts[j], truth[j], q[j]))
        seconds[role] = time.perf_counter() - t0
        metrics[role] = acc.result()
        if getattr(bound, "nonseasonal", 0):
            notes.append(f"{role}: {bound.nonseasonal} of {bound.fitted} instances fitted without seasonality (seasonal fit failed)")
        if getattr(bound, "fallbacks", 0):
            notes.append(f"{role}: {bound.fallbacks} of {bound.fitted} instances forecast by Seasonal Naive (fit failed)")
        if log:
            main = ", ".join(f"{k}={v.value:.4g}" for k, v in metrics[role].items() if k in ("MAE", "MSE", "CRPS", "MASE"))
            log(f"  {task.dataset} h={task.horizon} {role}: {main} ({seconds[role]:.1f}s, {n} instances)")
    return TaskResult(
        suite=task.suite, dataset=task.dataset, display_name=task.display_name, horizon=task.horizon,
        context_length=task.context_length, num_series=task.sampling.series_used, num_instances=n,
        sampling="; ".join([task.sampling.describe()] + notes), full_protocol=task.sampling.is_full, metrics=metrics,
        seconds=seconds, examples=examples,
    )


def parse_baselines(text: str) -> tuple[str, ...]:
    """'snaive,naive,autoets' -> canonical role names in BASELINE_NAMES order, Seasonal Naive always included;
    an unknown name raises ValueError naming it."""
    names = {SNAIVE}
    for raw in text.split(","):
        name = raw.strip().lower()
        if not name:
            continue
        name = BASELINE_ALIASES.get(name, name)
        if name not in BASELINE_NAMES:
            raise ValueError(f"unknown baseline {raw.strip()!r} (choose from snaive, {', '.join(BASELINE_NAMES[1:])})")
        names.add(name)
    return tuple(n for n in BASELINE_NAMES if n in names)


def reference_forecasters(model: Forecaster, baselines: tuple[str, ...] = DEFAULT_BASELINES,
                          n_jobs: int = 1) -> dict[str, Forecaster]:
    """The evaluated model plus the named baselines (Seasonal Naive always), by role."""
    out: dict[str, Forecaster] = {MODEL: model, SNAIVE: SeasonalNaive()}
    for name in baselines:
        if name == NAIVE:
            out[NAIVE] = Naive()
        elif name != SNAIVE:
            from eval.classical import StatsForecastBaseline

            out[name] = StatsForecastBaseline(name, n_jobs=n_jobs)
    return out


def _default_log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_suite(
    suite: str,
    datasets: list[str],
    model: Forecaster,
    data_dir: str | os.PathLike[str] | None = None,
    options: TaskOptions | None = None,
    cfg: EvalConfig | None = None,
    log: Callable[[str], None] | None = _default_log,
    baselines: tuple[str, ...] = DEFAULT_BASELINES,
    n_jobs: int = 1,
    progress: Progress | None = None,
) -> SuiteResult:
    """Evaluate `model` (and the baselines) on `datasets` under `suite`'s protocol; absent files -> `missing`.
    With `progress`, a dataset it has finished is taken from it, and each newly finished one is recorded there."""
    from data_prep.registry import DatasetMissingError

    options = options or TaskOptions()
    cfg = cfg or EvalConfig()
    result = SuiteResult(suite)
    forecasters = reference_forecasters(model, baselines, n_jobs)
    from tqdm import tqdm

    for name in tqdm(datasets, desc=f"eval {suite}", unit="dataset", disable=None):
        kept = progress.finished(suite, name) if progress is not None else None
        if kept is not None:
            result.tasks.extend(kept)
            if log:
                log(f"[{suite}] {name}: finished by the interrupted run (--resume), {len(kept)} task(s) kept")
            continue
        try:
            tasks = build_tasks(name, suite, data_dir, options)
        except DatasetMissingError as err:
            result.missing.append(MissingDataset.of(suite, name, err))
            if log:
                log(f"[{suite}] {name}: {err}")
            continue
        if log:
            log(f"[{suite}] {name}: {len(tasks)} task(s), {tasks[0].sampling.describe()}")
        done = [evaluate_task(task, forecasters, cfg, log) for task in tasks]
        result.tasks.extend(done)
        if progress is not None:
            progress.record(suite, name, done)
    return result


def run_task_suite(name: str, tasks: list[Task], model: Forecaster, cfg: EvalConfig | None = None,
                   log: Callable[[str], None] | None = _default_log, baselines: tuple[str, ...] = DEFAULT_BASELINES,
                   n_jobs: int = 1) -> SuiteResult:
    """Evaluate prebuilt tasks (e.g. a user's .tsf file) as a one-off suite named `name`."""
    cfg = cfg or EvalConfig()
    result = SuiteResult(name)
    forecasters = reference_forecasters(model, baselines, n_jobs)
    for task in tasks:
        result.tasks.append(evaluate_task(task, forecasters, cfg, log))
    return result
