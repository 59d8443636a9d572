"""Probes: synthetic series the model never trained on, each with a known best answer (`--suite probes`).

Every probe is a set of series generated deterministically from (seed, probe index, series index), cut
into one test instance each: the first `context_length` points are the context, the next `horizon` the
truth. The model and the baselines are scored by the zero-shot runner (`eval.runner.evaluate_task`) on
these instances exactly as on a real dataset, MASE/MSIS with the probe's period as the seasonality. The
"oracle" role is the best point forecast the generator knows: the noiseless continuation for periodic,
trend, level-shift and missing-value probes; the last context value for the random walk (its predictive
median); 0 for intermittent counts (every future point is 0 with probability 0.85, so 0 is its median);
the constant itself for the constant. The oracle is a point forecast (all quantiles equal it).

Besides results.csv / results.md / aggregate.csv (written by `eval.report`), `write_probe_table` writes
probes.csv and probes.md: per probe MAE, MASE and CRPS of the model, MASE of every baseline and the
oracle, and the model's MASE relative to Seasonal Naive and to the oracle.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from eval.metrics import MetricAccumulator, geometric_mean
from eval.protocols import Sampling, Task
from eval.runner import (DEFAULT_BASELINES, EVAL_QUANTILES, MODEL, SNAIVE, Forecaster, EvalConfig, SuiteResult,
                         TaskResult, _default_log, evaluate_task, reference_forecasters)
from moe_ts.forecast_output import ForecastOutput

ORACLE = "oracle"
PROBE_CONTEXT = 1024
AMPLITUDE = 3.0
NOISE_SD = 0.1


@dataclass(frozen=True)
class Probe:
    """One probe: its generator kind, period (the seasonality of MASE and Seasonal Naive) and horizon."""

    name: str
    kind: str
    period: int
    horizon: int
    description: str


def _periodic_horizon(period: int) -> int:
    """Two periods, at least 24 and at most 96 points."""
    return min(96, max(24, 2 * period))


PROBES: tuple[Probe, ...] = tuple(
    Probe(f"sine_p{p}", "sine", p, _periodic_horizon(p), f"sine, period {p}, amplitude {AMPLITUDE:g}, noise sd {NOISE_SD:g}")
    for p in (7, 12, 24, 48, 96, 168)
) + (
    Probe("profile_p24", "profile", 24, 48, "daily-profile shape (night low, morning and evening peaks), period 24"),
    Probe("trend_p24", "trend", 24, 48, "sine period 24 + linear trend (slope 0.005..0.02 per point, either sign)"),
    Probe("level_shift_p24", "level_shift", 24, 48, "sine period 24, level shifted by +-6 for the last quarter of the context"),
    Probe("missing_p24", "missing", 24, 48, "sine period 24, 20% of the context NaN plus a 48-point NaN gap"),
    Probe("random_walk", "random_walk", 1, 48, "Gaussian random walk (step sd 1); oracle: the last value"),
    Probe("intermittent", "intermittent", 1, 48, "counts: nonzero with probability 0.15, then 1 + Poisson(2); oracle: 0"),
    Probe("constant", "constant", 1, 48, "the constant 7; oracle: 7 (MASE undefined: zero in-sample scale)"),
)
PROBE_NAMES: tuple[str, ...] = tuple(p.name for p in PROBES)


def _profile(phase: np.ndarray) -> np.ndarray:
    """A non-sinusoidal daily shape over phase in [0, 1): low at night, a morning and a larger evening peak."""
    h = 24.0 * phase
    return 3.0 * np.exp(-0.5 * ((h - 8.0) / 1.5) ** 2) + 5.0 * np.exp(-0.5 * ((h - 19.0) / 2.0) ** 2)


def generate(probe: Probe, context_length: int, rng: np.random.Generator,
             noise_sd: float = NOISE_SD) -> tuple[np.ndarray, np.ndarray]:
    """(series [context_length + horizon] with NaN for missing, oracle point forecast [horizon])."""
    n = context_length + probe.horizon
    t = np.arange(n, dtype=np.float64)
    p = probe.period
    if probe.kind in ("sine", "trend", "level_shift", "missing"):
        clean = AMPLITUDE * np.sin(2.0 * np.pi * t / p + rng.uniform(0.0, 2.0 * np.pi))
        if probe.kind == "trend":
            clean = clean + rng.choice([-1.0, 1.0]) * rng.uniform(0.005, 0.02) * t
        if probe.kind == "level_shift":
            clean = clean + np.where(t >= context_length - context_length // 4, rng.choice([-6.0, 6.0]), 0.0)
        y = clean + rng.normal(0.0, noise_sd, n)
        if probe.kind == "missing":
            y[:context_length][rng.random(context_length) < 0.2] = np.nan
            gap = int(rng.integers(context_length // 4, context_length // 2))
            y[gap : gap + 48] = np.nan
        return y, clean[context_length:]
    if probe.kind == "profile":
        clean = rng.uniform(1.0, 2.0) * _profile(((t + rng.integers(0, p)) % p) / p) + 1.0
        return clean + rng.normal(0.0, noise_sd, n), clean[context_length:]
    if probe.kind == "random_walk":
        y = 10.0 + np.cumsum(rng.normal(0.0, 1.0, n))
        return y, np.full(probe.horizon, y[context_length - 1])
    if probe.kind == "intermittent":
        y = (rng.random(n) < 0.15) * (1.0 + rng.poisson(2.0, n))
        return y.astype(np.float64), np.zeros(probe.horizon)
    if probe.kind == "constant":
        return np.full(n, 7.0), np.full(probe.horizon, 7.0)
    raise ValueError(f"unknown probe kind {probe.kind!r}")


def min_context_length() -> int:
    """The shortest context every probe accepts: two periods of the longest."""
    return 2 * max(p.period for p in PROBES)


def get_probes(names: list[str] | None = None) -> list[Probe]:
    """The named probes (all when None); an unknown name raises ValueError naming it."""
    if names is None:
        return list(PROBES)
    by_name = {p.name: p for p in PROBES}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"unknown probe {unknown[0]!r} (choose from {', '.join(PROBE_NAMES)})")
    return [by_name[n] for n in names]


def probe_task(probe: Probe, n_series: int, context_length: int = PROBE_CONTEXT, seed: int = 0,
               noise_sd: float = NOISE_SD) -> tuple[Task, np.ndarray]:
    """The probe's task (one instance per series, forecast start = context_length) and its oracle [n, H]."""
    if n_series < 1 or context_length < 2 * probe.period:
        raise ValueError(f"probe {probe.name}: need n_series >= 1 and context_length >= 2 periods "
                         f"({2 * probe.period}), got {n_series}, {context_length}")
    index = PROBE_NAMES.index(probe.name)
    values, oracles = [], []
    for i in range(n_series):
        y, oracle = generate(probe, context_length, np.random.default_rng([seed, index, i]), noise_sd)
        values.append(y)
        oracles.append(oracle)
    sampling = Sampling(series_total=n_series, series_used=n_series, windows_total=n_series, windows_used=n_series,
                        stride=probe.horizon, protocol_stride=probe.horizon)
    task = Task(
        dataset=probe.name, display_name=probe.name, suite="probes", freq="probe", horizon=probe.horizon,
        seasonality=probe.period, context_length=context_length, values=values,
        item_ids=[f"{probe.name}_{i}" for i in range(n_series)], series_index=np.arange(n_series, dtype=np.int64),
        starts=np.full(n_series, context_length, dtype=np.int64), sampling=sampling, with_scaled=True,
    )
    return task, np.stack(oracles)


def oracle_metrics(task: Task, oracle: np.ndarray) -> dict:
    """The oracle's metrics on `task`, accumulated like any role's (a point forecast: all quantiles equal it)."""
    idx = np.arange(len(task))
    out = ForecastOutput.from_point(np.asarray(oracle, np.float64), EVAL_QUANTILES)
    acc = MetricAccumulator(EVAL_QUANTILES, with_scaled=True)
    acc.update(task.truth(idx), out.median, out.mean, out.quantiles, task.scales(idx), None)
    return acc.result()


def run_probes(
    model: Forecaster,
    cfg: EvalConfig | None = None,
    n_series: int = 8,
    context_length: int | None = None,
    baselines: tuple[str, ...] = DEFAULT_BASELINES,
    n_jobs: int = 1,
    seed: int = 0,
    noise_sd: float = NOISE_SD,
    names: list[str] | None = None,
    log: Callable[[str], None] | None = _default_log,
) -> SuiteResult:
    """Evaluate `model`, the baselines and the oracle on every probe; one task per probe, suite 'probes'."""
    cfg = cfg or EvalConfig()
    result = SuiteResult("probes")
    forecasters = reference_forecasters(model, baselines, n_jobs)
    for probe in get_probes(names):
        task, oracle = probe_task(probe, n_series, context_length or PROBE_CONTEXT, seed, noise_sd)
        res = evaluate_task(task, forecasters, cfg, log)
        res.metrics[ORACLE] = oracle_metrics(task, oracle)
        result.tasks.append(res)
    return result


def _value(t: TaskResult, role: str, metric: str) -> float:
    mv = t.metrics.get(role, {}).get(metric)
    return float(mv.value) if mv is not None else float("nan")


def _ratio(a: float, b: float) -> float:
    return a / b if math.isfinite(a) and math.isfinite(b) and b > 0 else float("nan")


def probe_rows(suite: SuiteResult) -> list[dict[str, float | str | int]]:
    """One row per probe: the model's MAE/MASE/CRPS, every other role's MASE, and the model's MASE ratios."""
    rows = []
    for t in suite.tasks:
        row: dict[str, float | str | int] = {"probe": t.dataset, "period": 0, "horizon": t.horizon, "series": t.num_series}
        probe = next((p for p in PROBES if p.name == t.dataset), None)
        row["period"] = probe.period if probe else 0
        row["MAE_model"] = _value(t, MODEL, "MAE")
        row["CRPS_model"] = _value(t, MODEL, "CRPS")
        for role in t.metrics:
            row[f"MASE_{role}"] = _value(t, role, "MASE")
        row["MAE_oracle"] = _value(t, ORACLE, "MAE")
        row["MAE_seasonal_naive"] = _value(t, SNAIVE, "MAE")
        row["model_vs_snaive"] = _ratio(row["MASE_model"], row["MASE_seasonal_naive"])  # type: ignore[arg-type]
        row["model_vs_oracle"] = _ratio(row["MASE_model"], row.get("MASE_oracle", float("nan")))  # type: ignore[arg-type]
        rows.append(row)
    return rows


def _fmt(x: object) -> str:
    if isinstance(x, float):
        return "n/a" if not math.isfinite(x) else (f"{x:.3g}" if abs(x) < 1e4 else f"{x:.3e}")
    return str(x)


def summary_line(rows: list[dict], model_name: str) -> str:
    """Geometric means over the probes where defined of the model's MASE relative to Seasonal Naive and the oracle."""
    parts = []
    for key, what in (("model_vs_snaive", "Seasonal Naive"), ("model_vs_oracle", "the oracle")):
        vals = [float(r[key]) for r in rows if math.isfinite(float(r[key])) and float(r[key]) > 0]
        gm = geometric_mean(vals) if vals else float("nan")
        parts.append(f"MASE / {what}: geometric mean {_fmt(gm)} over {len(vals)} of {len(rows)} probes")
    beats = sum(1 for r in rows if math.isfinite(float(r["model_vs_snaive"])) and float(r["model_vs_snaive"]) < 1)
    return f"probes, {model_name}: " + "; ".join(parts) + f"; beats Seasonal Naive on {beats}"


def write_rows_csv(rows: list[dict], path: Path) -> list[str]:
    """`rows` as a CSV at `path` (floats in full precision), columns in first-seen order; returns the columns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys or ["empty"])
        w.writeheader()
        for r in rows:
            w.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in r.items()})
    return keys


def write_probe_table(suite: SuiteResult, out_dir: Path, model_name: str) -> str:
    """probes.csv and probes.md under out_dir; returns the markdown (table and summary line)."""
    rows = probe_rows(suite)
    keys = write_rows_csv(rows, out_dir / "probes.csv")
    lines = ["## probes (synthetic series with a known best answer)", "",
             "MASE scale: in-sample seasonal-naive MAE with the probe's period; model_vs_* = the model's MASE / theirs.",
             "Probes: " + "; ".join(f"{p.name}: {p.description}" for p in PROBES if any(r["probe"] == p.name for r in rows)),
             "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(k, float("nan"))) for k in keys) + " |")
    lines += ["", summary_line(rows, model_name), ""]
    text = "\n".join(lines)
    (out_dir / "probes.md").write_text(text)
    return text
