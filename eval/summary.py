"""Compact side-by-side print-out of finished evaluations (the end of `make demo`):

    python -m eval.summary DIR [DIR ...]

For every results.csv under the given output folders of `python -m eval.run`: per suite, one table per
aggregate metric (rows: datasets, the mean over horizons for LSF; columns: the model and every baseline that
ran), then the geometric mean over datasets of each role relative to Seasonal Naive from aggregate.csv. For a
folder holding probes.csv (`--suite probes`): the per-probe MASE of every role and the model's ratios.
Numbers from a subsampled protocol carry '*', and the sampling line is printed under the table.
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

from eval.report import DISPLAY, aggregate_metrics

ROLE_ORDER = ("model", "seasonal_naive", "naive", "autoets", "autotheta", "autoarima", "oracle")


def _read(path: Path) -> list[dict[str, str]]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def _fmt(x: float) -> str:
    if not math.isfinite(x):
        return "n/a"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.3e}"
    return f"{x:.4g}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return [line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]


def _ordered(roles: set[str]) -> list[str]:
    return [r for r in ROLE_ORDER if r in roles] + sorted(roles - set(ROLE_ORDER))


def summarise_results(out_dir: Path) -> list[str]:
    """Lines for every suite of out_dir/results.csv (and its aggregate.csv)."""
    rows = [r for r in _read(out_dir / "results.csv") if r["status"] == "ok"]
    aggs = _read(out_dir / "aggregate.csv") if (out_dir / "aggregate.csv").exists() else []
    missing = [r for r in _read(out_dir / "results.csv") if r["status"] == "missing"]
    lines: list[str] = []
    for suite in dict.fromkeys(r["suite"] for r in rows):
        srows = [r for r in rows if r["suite"] == suite]
        roles = _ordered({r["role"] for r in srows})
        model_name = next((r["model"] for r in srows if r["role"] == "model"), "model")
        notes: list[str] = []
        for metric in aggregate_metrics(suite):
            values: dict[tuple[str, str], list[float]] = {}
            sampling: dict[str, set[str]] = {}
            for r in srows:
                if r["metric"] == metric:
                    values.setdefault((r["dataset"], r["role"]), []).append(float(r["value"]))
                    sampling.setdefault(r["dataset"], set()).add(r["sampling"])
            datasets = list(dict.fromkeys(ds for ds, _ in values))
            body = []
            for ds in datasets:
                sub = any(s != "full protocol" for s in sampling[ds])
                cells = [ds + ("*" if sub else "")]
                for role in roles:
                    v = values.get((ds, role))
                    cells.append(_fmt(sum(v) / len(v)) if v else "")
                body.append(cells)
                notes += [f"  * {ds}: {s}" for s in sorted(sampling[ds]) if s != "full protocol" and f"  * {ds}: {s}" not in notes]
            header = [f"[{out_dir}] {suite} {metric}"] + [model_name if r == "model" else DISPLAY.get(r, r) for r in roles]
            lines += _table(header, body)
            rel = {a["role"]: a for a in aggs if a["suite"] == suite and a["metric"] == metric}
            if rel:
                parts = [f"{model_name if role == 'model' else DISPLAY.get(role, role)} "
                         f"{_fmt(float(rel[role]['geomean_relative_to_seasonal_naive']))}"
                         for role in roles if role in rel]
                used = next(iter(rel.values()))["datasets_used"]
                lines.append(f"geometric mean / Seasonal Naive over {used} dataset(s): " + ", ".join(parts))
            lines.append("")
        lines += notes + ([""] if notes else [])
        gone = [m["dataset"] for m in missing if m["suite"] == suite]
        if gone:
            lines += [f"missing (not in the tables): {', '.join(gone)}", ""]
    return lines


def summarise_probes(out_dir: Path) -> list[str]:
    """Lines for out_dir/probes.csv: per probe MASE of every role and the model's ratios."""
    rows = _read(out_dir / "probes.csv")
    if not rows:
        return []
    roles = _ordered({k[len("MASE_"):] for k in rows[0] if k.startswith("MASE_")})
    header = ["probe", "period", "h"] + [f"MASE {DISPLAY.get(r, r)}" for r in roles] + ["model/SNaive", "model/oracle"]
    body = [[r["probe"], r["period"], r["horizon"]] + [_fmt(float(r[f"MASE_{role}"])) for role in roles]
            + [_fmt(float(r["model_vs_snaive"])), _fmt(float(r["model_vs_oracle"]))] for r in rows]
    lines = _table([f"[{out_dir}] probes"] + header[1:], body)
    text = (out_dir / "probes.md").read_text() if (out_dir / "probes.md").exists() else ""
    lines += [ln for ln in text.splitlines() if ln.startswith("probes, ")] + [""]
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.summary", description=__doc__.split("\n\n")[0])
    p.add_argument("dirs", nargs="+", type=Path, help="output folders of python -m eval.run")
    args = p.parse_args(argv)
    lines: list[str] = []
    for d in args.dirs:
        if not (d / "results.csv").exists():
            p.error(f"{d}: no results.csv (not an output folder of python -m eval.run)")
        lines += summarise_results(d) if not (d / "probes.csv").exists() else []
        if (d / "probes.csv").exists():
            lines += summarise_probes(d)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
