"""Periodic validation suite: held-back windows of real series with strong daily / weekly cycles (`--suite periodic`).

The probes (eval/probes.py) say whether the model continues a clean synthetic cycle; this suite asks the same of
real high-frequency data, without touching any test split, so a recipe can be chosen on it. Every window's
targets end at or before the start of its series' test span (`data_prep.registry.test_span`):

- M4 Hourly and NN5 Daily (Monash sets): the last `windows` windows of `horizon` points *before* the test
  window. Their training parts are in the pretraining corpus, so these windows measure the in-corpus ability
  to continue a cycle, not zero-shot skill.
- ETTh1 / ETTh2 (LSF sets, held out of the corpus whole): windows evenly spread over the LSF validation split
  (`lsf_val_span`), raw values (MASE is scale-free): a zero-shot check.
- Australian electricity demand and pedestrian counts (Monash .tsf, downloadable): as M4 Hourly when present,
  reported as missing otherwise.

Each set is one task, scored by the zero-shot runner with MASE/MSIS at the set's period, Seasonal Naive on the
same windows. `write_periodic_table` writes periodic.csv / periodic.md: per set the model's MASE, every
baseline's MASE, and the model's MASE relative to Seasonal Naive.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from eval.metrics import geometric_mean
from eval.probes import write_rows_csv
from eval.protocols import Sampling, Task, _drop_undefined
from eval.runner import (DEFAULT_BASELINES, MODEL, SNAIVE, EvalConfig, Forecaster, MissingDataset, SuiteResult,
                         _default_log, evaluate_task, reference_forecasters)

SUITE = "periodic"
CONTEXT = 512


@dataclass(frozen=True)
class PeriodicSet:
    """One registered dataset of the suite: its cycle (MASE's seasonality), horizon and where windows come from."""

    name: str  # registry name
    period: int
    horizon: int
    split: str  # "before_test": windows ending at the test span's start; "lsf_val": spread over the LSF val split
    description: str


PERIODIC_SETS: tuple[PeriodicSet, ...] = (
    PeriodicSet("m4_hourly", 24, 48, "before_test",
                "M4 Hourly, daily cycle; windows before the test window (train part: in the corpus)"),
    PeriodicSet("nn5_daily", 7, 56, "before_test",
                "NN5 cash withdrawals, weekly cycle; windows before the test window (in the corpus)"),
    PeriodicSet("etth1", 24, 48, "lsf_val", "ETTh1 channels, daily cycle; LSF validation split (held out of the corpus)"),
    PeriodicSet("etth2", 24, 48, "lsf_val", "ETTh2 channels, daily cycle; LSF validation split (held out of the corpus)"),
    PeriodicSet("aus_elec_demand", 48, 48, "before_test",
                "Australian half-hourly electricity demand, daily cycle; windows before the test windows"),
    PeriodicSet("pedestrian_counts", 24, 48, "before_test",
                "Melbourne hourly pedestrian counts, daily cycle; windows before the test window"),
)
PERIODIC_NAMES: tuple[str, ...] = tuple(s.name for s in PERIODIC_SETS)


def window_starts(pset: PeriodicSet, length: int, windows: int) -> np.ndarray:
    """Forecast starts of a series of `length` points: every target before the test span (ValueError if none fit)."""
    from data_prep import registry

    h = pset.horizon
    if pset.split == "before_test":
        end = registry.test_span(pset.name, length)[0]
        starts = end - h * np.arange(windows, 0, -1, dtype=np.int64)
    elif pset.split == "lsf_val":
        lo, end = registry.lsf_val_span(pset.name, length)
        starts = np.unique(np.linspace(lo, end - h, windows).round().astype(np.int64))
    else:
        raise ValueError(f"{pset.name}: unknown split {pset.split!r}")
    starts = starts[starts >= 2 * pset.period]  # at least two cycles of context
    if len(starts) == 0:
        raise ValueError(f"{pset.name}: a series of {length} points has no room for a validation window of {h}")
    return starts


def periodic_task(pset: PeriodicSet, series: list, n_series: int, windows: int, context_length: int = CONTEXT) -> Task:
    """The set's task: the first `n_series` series (channels), `windows` validation windows each."""
    used = series[:n_series]
    values = [np.asarray(s.target, dtype=np.float64) for s in used]
    si, st = [], []
    for k, v in enumerate(values):
        starts = window_starts(pset, len(v), windows)
        si += [k] * len(starts)
        st += starts.tolist()
    dropped: list[str] = []
    si_a, st_a = _drop_undefined(values, np.array(si, np.int64), np.array(st, np.int64), pset.horizon,
                                 context_length, dropped)
    sampling = Sampling(series_total=len(series), series_used=len(used), windows_total=len(st),
                        windows_used=len(st), stride=pset.horizon, protocol_stride=pset.horizon, dropped=dropped)
    return Task(dataset=pset.name, display_name=pset.name + " [val]", suite=SUITE, freq=used[0].freq,
                horizon=pset.horizon, seasonality=pset.period, context_length=context_length, values=values,
                item_ids=[s.item_id for s in used], series_index=si_a, starts=st_a, sampling=sampling, with_scaled=True)


def run_periodic(
    model: Forecaster,
    cfg: EvalConfig | None = None,
    n_series: int = 8,
    windows: int = 3,
    context_length: int | None = None,
    baselines: tuple[str, ...] = DEFAULT_BASELINES,
    n_jobs: int = 1,
    data_dir: str | os.PathLike[str] | None = None,
    names: tuple[str, ...] = PERIODIC_NAMES,
    log: Callable[[str], None] | None = _default_log,
) -> SuiteResult:
    """Evaluate `model` and the baselines on every set of the suite whose files are present (the others: missing)."""
    from data_prep.registry import DatasetMissingError, load_series

    cfg = cfg or EvalConfig()
    result = SuiteResult(SUITE)
    forecasters = reference_forecasters(model, baselines, n_jobs)
    by_name = {s.name: s for s in PERIODIC_SETS}
    for name in names:
        pset = by_name[name]
        try:
            series = load_series(name, data_dir, max_series=n_series)
        except DatasetMissingError as err:
            result.missing.append(MissingDataset.of(SUITE, name, err))
            if log:
                log(f"[{SUITE}] {err}")
            continue
        task = periodic_task(pset, series, n_series, windows, context_length or CONTEXT)
        if log:
            log(f"[{SUITE}] {name}: {len(task)} validation windows of {pset.horizon} (period {pset.period})")
        result.tasks.append(evaluate_task(task, forecasters, cfg, log))
    return result


def _value(metrics: dict, role: str, metric: str) -> float:
    mv = metrics.get(role, {}).get(metric)
    return float(mv.value) if mv is not None else float("nan")


def periodic_rows(suite: SuiteResult) -> list[dict[str, float | str | int]]:
    """One row per set: period, horizon, windows, the model's MAE / CRPS, every role's MASE, model / Seasonal Naive."""
    rows = []
    for t in suite.tasks:
        pset = next(s for s in PERIODIC_SETS if s.name == t.dataset)
        row: dict[str, float | str | int] = {"set": t.dataset, "period": pset.period, "horizon": t.horizon,
                                             "windows": t.num_instances}
        row["MAE_model"] = _value(t.metrics, MODEL, "MAE")
        row["CRPS_model"] = _value(t.metrics, MODEL, "CRPS")
        for role in t.metrics:
            row[f"MASE_{role}"] = _value(t.metrics, role, "MASE")
        a, b = float(row["MASE_model"]), float(row.get(f"MASE_{SNAIVE}", float("nan")))
        row["model_vs_snaive"] = a / b if math.isfinite(a) and math.isfinite(b) and b > 0 else float("nan")
        rows.append(row)
    return rows


def _fmt(x: object) -> str:
    return ("n/a" if not math.isfinite(x) else f"{x:.3g}") if isinstance(x, float) else str(x)


def write_periodic_table(suite: SuiteResult, out_dir: Path, model_name: str) -> str:
    """periodic.csv and periodic.md under out_dir; returns the markdown (table and a geometric-mean line)."""
    rows = periodic_rows(suite)
    keys = write_rows_csv(rows, out_dir / "periodic.csv")
    ratios = [float(r["model_vs_snaive"]) for r in rows if math.isfinite(float(r["model_vs_snaive"]))]
    gm = geometric_mean(ratios) if ratios else float("nan")
    lines = ["## periodic validation suite (real series with daily / weekly cycles; no test-split window)", "",
             "MASE scale: in-sample seasonal-naive MAE at the set's period; model_vs_snaive = the model's MASE / "
             "Seasonal Naive's on the same windows.",
             "Sets: " + "; ".join(f"{s.name}: {s.description}" for s in PERIODIC_SETS
                                  if any(r["set"] == s.name for r in rows)),
             ""]
    if rows:
        lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(_fmt(r.get(k, float("nan"))) for k in keys) + " |" for r in rows]
    lines += [f"missing: {m.dataset} ({m.message})" for m in suite.missing]
    lines += ["", f"periodic, {model_name}: MASE / Seasonal Naive: geometric mean {_fmt(gm)} over {len(ratios)} sets; "
                  f"beats Seasonal Naive on {sum(1 for x in ratios if x < 1)}", ""]
    text = "\n".join(lines)
    (out_dir / "periodic.md").write_text(text)
    return text
