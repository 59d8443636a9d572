"""Forecast throughput with and without the KV cache (baseline: re-encoding the prefix each step).

    python benchmarks/forecast.py --config configs/small.yaml --series 8 --samples 20 --context 512 --horizon 720 --out benchmarks/results/forecast.json

Prints a table and writes JSON; the figure that matters is the ratio cached / recompute measured
in the same process (these machines are noisy). Weights are random: speed does not depend on them.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from moe_ts.config import load_model_config
from moe_ts.model import MoiraiMoEModel


def time_forecast(model: MoiraiMoEModel, contexts: list[np.ndarray], horizon: int, samples: int, use_cache: bool, repeats: int) -> float:
    """Best wall-clock seconds of `repeats` forecasts."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        model.forecast(contexts, horizon, num_samples=samples, seed=0, use_kv_cache=use_cache, context_length=len(contexts[0]))
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/small.yaml")
    parser.add_argument("--series", type=int, default=8)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--horizon", type=int, default=720)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    parser.add_argument("--out", default="benchmarks/results/forecast.json")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = MoiraiMoEModel(load_model_config(args.config)).eval()
    rng = np.random.default_rng(0)
    t = np.arange(args.context)
    contexts = [np.sin(t / (5 + i)) * 10 + rng.normal(size=args.context) for i in range(args.series)]
    model.forecast(contexts[:1], 16, num_samples=2)  # warm-up
    rows = []
    for name, use_cache in (("recompute (baseline)", False), ("kv-cache", True)):
        seconds = time_forecast(model, contexts, args.horizon, args.samples, use_cache, args.repeats)
        paths_steps = args.series * args.samples * args.horizon
        rows.append({"mode": name, "seconds": seconds, "steps_per_s": paths_steps / seconds})
    baseline = rows[0]["seconds"]
    for row in rows:
        row["speedup_vs_recompute"] = baseline / row["seconds"]
    result = {
        "benchmark": "forecast", "config": args.config, "series": args.series, "samples": args.samples,
        "context": args.context, "horizon": args.horizon, "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
        "params_total": model.num_parameters(), "params_active": model.num_parameters(active=True), "rows": rows,
    }
    print(f"forecast: {args.config}, {args.series} series x {args.samples} samples, context {args.context}, horizon {args.horizon}")
    print(f"{'mode':<22} {'seconds':>9} {'steps/s':>12} {'speedup':>8}")
    for row in rows:
        print(f"{row['mode']:<22} {row['seconds']:>9.2f} {row['steps_per_s']:>12.0f} {row['speedup_vs_recompute']:>7.2f}x")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
