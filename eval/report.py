"""Results files (docs/ARCHITECTURE.md §6): results.csv (one row per dataset × horizon × role × metric, plus one row per
missing dataset), aggregate.csv and results.md (per-dataset tables and the geometric-mean aggregate of the
model's metric relative to Seasonal Naive, and of every other role that ran: Naive, the statsforecast baselines
of `--baselines`, the probes' oracle).

Aggregate metrics per suite: Monash MAE; zero-shot CRPS and MASE; LSF MSE and MAE (each dataset's value
averaged over its four horizons first). A missing dataset is listed with its "missing: put FILE under DIR"
message and left out of the aggregate, and the count is stated; so is any dataset whose ratio is undefined
(Seasonal Naive scoring 0 or NaN). Any number computed on a subsample of the protocol is marked. Under each
aggregate, results.md also gives it without the datasets scored on a single instance.
"""
from __future__ import annotations

import csv
import math
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eval.metrics import METRIC_NAMES, geometric_mean
from eval.runner import MODEL, NAIVE, ROLES, SNAIVE, SuiteResult, TaskResult

AGGREGATE_METRICS: dict[str, tuple[str, ...]] = {
    "monash": ("MAE",),
    "monash_extra": ("MAE",),
    "zeroshot": ("CRPS", "MASE"),
    "lsf": ("MSE", "MAE"),
}
DEFAULT_AGGREGATE = ("MAE", "CRPS", "MASE")
CSV_FIELDS = (
    "suite", "dataset", "display_name", "horizon", "role", "model", "metric", "value", "excluded",
    "num_series", "num_instances", "context_length", "sampling", "status", "message",
)


DISPLAY = {SNAIVE: "SNaive", NAIVE: "Naive", "autoets": "AutoETS", "autotheta": "AutoTheta",
           "autoarima": "AutoARIMA", "oracle": "Oracle"}


def suite_roles(suite: SuiteResult) -> list[str]:
    """The roles with metrics in any task: model, Seasonal Naive, Naive first, then the others in run order."""
    seen = [r for r in ROLES if any(r in t.metrics for t in suite.tasks)]
    for t in suite.tasks:
        seen += [r for r in t.metrics if r not in seen]
    return seen


def aggregate_metrics(suite: str) -> tuple[str, ...]:
    """The metrics a suite's aggregate is computed on."""
    return AGGREGATE_METRICS.get(suite, DEFAULT_AGGREGATE)


@dataclass
class Aggregate:
    """Geometric mean over datasets of role/Seasonal-Naive for one metric."""

    suite: str
    metric: str
    role: str
    value: float  # NaN when no dataset has a defined ratio
    datasets_used: list[str]
    undefined: list[str]  # datasets with a zero / NaN ratio, left out
    missing: list[str]


def dataset_values(suite: SuiteResult, metric: str, role: str) -> dict[str, float]:
    """Per dataset, the role's metric averaged over the dataset's tasks (LSF: over horizons)."""
    by_ds: dict[str, list[float]] = {}
    for t in suite.tasks:
        mv = t.metrics.get(role, {}).get(metric)
        by_ds.setdefault(t.dataset, []).append(mv.value if mv is not None else float("nan"))
    return {ds: float(np.mean(v)) for ds, v in by_ds.items()}


def aggregate(suite: SuiteResult, metric: str, role: str = MODEL, exclude: Collection[str] = ()) -> Aggregate:
    """Geometric mean over datasets (those in `exclude` left out) of role's metric / Seasonal Naive's (undefined
    ratios are listed, not used)."""
    num, den = dataset_values(suite, metric, role), dataset_values(suite, metric, SNAIVE)
    ratios, used, undefined = [], [], []
    for ds, v in num.items():
        if ds in exclude:
            continue
        r = v / den[ds] if den.get(ds) else float("nan")
        if math.isfinite(r) and r > 0:
            ratios.append(r)
            used.append(ds)
        else:
            undefined.append(ds)
    value = geometric_mean(ratios) if ratios else float("nan")
    return Aggregate(suite.suite, metric, role, value, used, undefined, [m.dataset for m in suite.missing])


def single_instance_datasets(suite: SuiteResult) -> list[str]:
    """Datasets whose score rests on one forecast instance (e.g. Monash's US Births and Sunspot: one series, one
    window). Each weighs as much in the geometric mean as a dataset of thousands of instances."""
    instances: dict[str, int] = {}
    for t in suite.tasks:
        instances[t.dataset] = instances.get(t.dataset, 0) + t.num_instances
    return [ds for ds, n in instances.items() if n == 1]


def _fmt(x: float) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.3e}"
    return f"{x:.4f}" if abs(x) < 10 else f"{x:.2f}"


def write_csv(suites: list[SuiteResult], path: Path, model_name: str) -> None:
    """results.csv: one row per dataset × horizon × role × metric; one 'missing' row per absent dataset."""
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        w.writeheader()
        for s in suites:
            roles = suite_roles(s)
            for t in s.tasks:
                for role in roles:
                    for metric in METRIC_NAMES:
                        mv = t.metrics.get(role, {}).get(metric)
                        if mv is None:
                            continue
                        w.writerow({
                            "suite": s.suite, "dataset": t.dataset, "display_name": t.display_name,
                            "horizon": t.horizon, "role": role, "model": model_name if role == MODEL else role, "metric": metric,
                            "value": repr(float(mv.value)), "excluded": mv.excluded, "num_series": t.num_series,
                            "num_instances": t.num_instances, "context_length": t.context_length,
                            "sampling": t.sampling, "status": "ok", "message": "",
                        })
            for m in s.missing:
                w.writerow({"suite": s.suite, "dataset": m.dataset, "status": "missing", "message": m.message})


def write_aggregate_csv(aggs: list[Aggregate], path: Path) -> None:
    """aggregate.csv: one row per suite × metric × role (model and naive, both relative to Seasonal Naive)."""
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["suite", "metric", "role", "geomean_relative_to_seasonal_naive", "datasets_used",
                    "datasets_undefined", "datasets_missing"])
        for a in aggs:
            w.writerow([a.suite, a.metric, a.role, repr(a.value), len(a.datasets_used),
                        ";".join(a.undefined), ";".join(a.missing)])


def _row_cells(rows: list[TaskResult], metrics: tuple[str, ...], roles: list[str]) -> list[str]:
    """Cells model | SNaive | Naive | ... | rel for each metric, averaging over `rows` (one task or a dataset's horizons)."""
    cells = []
    for metric in metrics:
        vals = {}
        excl = 0
        for role in roles:
            vs = [r.metrics.get(role, {}).get(metric) for r in rows]
            vals[role] = float(np.mean([v.value for v in vs])) if all(v is not None for v in vs) else float("nan")
            if role == MODEL:
                excl = sum(v.excluded for v in vs if v is not None)
        rel = vals[MODEL] / vals[SNAIVE] if vals[SNAIVE] else float("nan")
        model_cell = _fmt(vals[MODEL]) + (f" ({excl} undef.)" if excl else "")
        cells += [model_cell] + [_fmt(vals[r]) for r in roles if r != MODEL] + [_fmt(rel)]
    return cells


def suite_markdown(suite: SuiteResult, model_name: str) -> tuple[str, list[Aggregate]]:
    """The markdown section of one suite and its aggregates (the model and every other baseline, relative to Seasonal Naive)."""
    metrics = aggregate_metrics(suite.suite)
    roles = suite_roles(suite)
    others = [r for r in roles if r not in (MODEL, SNAIVE)]
    aggs = [aggregate(suite, m, role) for m in metrics for role in [MODEL] + others]
    n_ds = len({t.dataset for t in suite.tasks})
    lines = [f"## {suite.suite}", ""]
    singles_all = single_instance_datasets(suite)
    for a in aggs:
        if a.role != MODEL:
            continue
        rest = "; ".join(f"{DISPLAY.get(b.role, b.role)} / Seasonal Naive: {_fmt(b.value)}"
                         for b in aggs if b.metric == a.metric and b.role != MODEL)
        lines.append(
            f"- **{a.metric}**, geometric mean over {len(a.datasets_used)} dataset(s) of {model_name} / Seasonal Naive: "
            f"**{_fmt(a.value)}**" + (f" ({rest})" if rest else "")
        )
        if a.undefined:
            lines.append(f"  - left out, ratio undefined: {', '.join(a.undefined)}")
        singles = [ds for ds in singles_all if ds in a.datasets_used]
        if singles and len(singles) < len(a.datasets_used):
            names = ", ".join(next(t.display_name for t in suite.tasks if t.dataset == ds) for ds in singles)
            without = aggregate(suite, a.metric, MODEL, exclude=singles).value
            lines.append(f"  - {len(singles)} of the {len(a.datasets_used)} rest on a single forecast instance ({names}); "
                         f"without them: {_fmt(without)}")
    if suite.missing:
        lines.append(
            f"- {len(suite.missing)} of {n_ds + len(suite.missing)} dataset(s) missing, excluded from the aggregate: "
            + ", ".join(m.dataset for m in suite.missing)
        )
    if any(not t.full_protocol for t in suite.tasks):
        lines.append("- `*` marks numbers computed on a SUBSAMPLE of the published protocol (see the sampling column); "
                     "they are not the full-protocol result.")
    lines.append("")
    header = ["dataset", "h", "series", "instances"]
    for m in metrics:
        header += [f"{m} {model_name}"] + [f"{m} {DISPLAY.get(r, r)}" for r in roles if r != MODEL] + [f"{m} rel."]
    header.append("sampling")
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    by_ds: dict[str, list[TaskResult]] = {}
    for t in suite.tasks:
        by_ds.setdefault(t.dataset, []).append(t)
    for ds, rows in by_ds.items():
        for t in rows:
            star = "" if t.full_protocol else "*"
            lines.append("| " + " | ".join(
                [f"{t.display_name}{star}", str(t.horizon), str(t.num_series), str(t.num_instances)]
                + _row_cells([t], metrics, roles) + [t.sampling]) + " |")
        if len(rows) > 1:
            star = "" if all(t.full_protocol for t in rows) else "*"
            lines.append("| " + " | ".join(
                [f"{rows[0].display_name}{star}", "mean", str(rows[0].num_series), str(sum(t.num_instances for t in rows))]
                + _row_cells(rows, metrics, roles) + ["mean over horizons"]) + " |")
    for m in suite.missing:
        lines.append("| " + " | ".join([m.dataset, m.message] + [""] * (len(header) - 2)) + " |")
    lines.append("")
    return "\n".join(lines), aggs


def write_markdown(suites: list[SuiteResult], path: Path, model_name: str, header_lines: list[str]) -> tuple[str, list[Aggregate]]:
    """results.md: a header, then one section per suite; returns the text and all aggregates."""
    parts = [f"# Zero-shot evaluation: {model_name}", ""] + header_lines + [""]
    all_aggs: list[Aggregate] = []
    for s in suites:
        text, aggs = suite_markdown(s, model_name)
        parts.append(text)
        all_aggs += aggs
    text = "\n".join(parts)
    path.write_text(text)
    return text, all_aggs


def write_reports(suites: list[SuiteResult], out_dir: Path, model_name: str, header_lines: list[str]) -> str:
    """Write results.csv, aggregate.csv and results.md under out_dir; return the markdown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(suites, out_dir / "results.csv", model_name)
    text, aggs = write_markdown(suites, out_dir / "results.md", model_name, header_lines)
    write_aggregate_csv(aggs, out_dir / "aggregate.csv")
    return text
