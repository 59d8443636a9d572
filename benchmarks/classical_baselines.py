"""Cost of the statsforecast baselines per dataset: CPU seconds per fitted instance on an even sample of each
task's instances, extrapolated to the whole task (CPU time, because these machines are shared: wall time
varies with the other jobs, one process's CPU time much less).

    python benchmarks/classical_baselines.py --suite monash --sample 20 --out benchmarks/results/classical_monash.json
    python benchmarks/classical_baselines.py --suite lsf --lsf-stride 96 --sample 10 --out ...

Each instance is fitted exactly as `eval.classical.StatsForecastBaseline` does (same contexts as the runner).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from data_prep import registry
from eval.classical import StatsForecastBaseline
from eval.protocols import TaskOptions, build_tasks
from eval.runner import EVAL_QUANTILES


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--suite", default="monash")
    p.add_argument("--baselines", default="autoets,autotheta")
    p.add_argument("--sample", type=int, default=20, help="instances timed per task (evenly spread)")
    p.add_argument("--lsf-stride", type=int, default=96)
    p.add_argument("--data-dir")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    names = [b.strip() for b in args.baselines.split(",") if b.strip()]
    rows = []
    # warm-up: the first fit pays for imports and any compilation
    StatsForecastBaseline(names[0], 12).forecast([np.sin(np.arange(60.0))], 6, EVAL_QUANTILES)
    for ds in registry.list_suite(args.suite):
        try:
            tasks = build_tasks(ds, args.suite, args.data_dir, TaskOptions(lsf_stride=args.lsf_stride))
        except registry.DatasetMissingError:
            continue
        for task in tasks:
            n = len(task)
            idx = np.unique(np.linspace(0, n - 1, min(n, args.sample)).round().astype(np.int64))
            ctx = task.contexts(idx)
            row = {"dataset": ds, "horizon": task.horizon, "season": task.seasonality, "instances": n,
                   "timed": len(idx), "mean_context": float(np.mean([len(c) for c in ctx]))}
            for name in names:
                b = StatsForecastBaseline(name, task.seasonality)
                c0, w0 = time.process_time(), time.perf_counter()
                b.forecast(ctx, task.horizon, EVAL_QUANTILES)
                cpu, wall = time.process_time() - c0, time.perf_counter() - w0
                row[f"{name}_cpu_s_per_instance"] = cpu / len(idx)
                row[f"{name}_cpu_s_task_estimate"] = cpu / len(idx) * n
                row[f"{name}_wall_s_timed"] = wall
                row[f"{name}_fallbacks"] = b.fallbacks + b.nonseasonal
            rows.append(row)
            print(" ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    totals = {name: sum(r[f"{name}_cpu_s_task_estimate"] for r in rows) for name in names}
    print("estimated CPU seconds for the whole suite:", {k: round(v, 1) for k, v in totals.items()})
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)}, "rows": rows,
                                        "cpu_s_suite_estimate": totals}, indent=1))


if __name__ == "__main__":
    main()
