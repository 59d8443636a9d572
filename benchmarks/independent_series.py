"""The cost of per-series random streams (`moe_ts.forecast_harness.independent_series`, the `moe-ts forecast`
default): every series decoded alone on its own stream vs the batched draws (baseline, `--no-independent-series`).

    python benchmarks/independent_series.py --config configs/small.yaml --series 32 --samples 20 --horizon 96 --out benchmarks/results/independent_series.json

Prints a table and writes JSON; the figure is the ratio independent / batched seconds in the same process (these
machines are noisy). Weights are random: speed does not depend on them.
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
from moe_ts.forecast_harness import independent_series
from moe_ts.model import MoiraiMoEModel


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/small.yaml")
    parser.add_argument("--series", type=int, default=32)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--horizon", type=int, default=96)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    parser.add_argument("--out", default="benchmarks/results/independent_series.json")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = MoiraiMoEModel(load_model_config(args.config)).eval()
    rng = np.random.default_rng(0)
    contexts = [np.sin(np.arange(args.context) / (5 + i)) * 10 + rng.normal(size=args.context)
                for i in range(args.series)]
    model.forecast(contexts[:1], 16, num_samples=2)  # warm-up
    rows = []
    for name, independent in (("batched draws (baseline)", False), ("independent series", True)):
        start = time.perf_counter()
        with independent_series(independent):
            model.forecast(contexts, args.horizon, num_samples=args.samples, seed=0, batch_size=args.series,
                           context_length=args.context)
        rows.append({"mode": name, "seconds": time.perf_counter() - start})
    for row in rows:
        row["ratio_vs_batched"] = row["seconds"] / rows[0]["seconds"]
    result = {"benchmark": "independent_series", "config": args.config, "series": args.series,
              "samples": args.samples, "context": args.context, "horizon": args.horizon,
              "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
              "torch": torch.__version__, "rows": rows}
    print(f"independent series: {args.config}, {args.series} series x {args.samples} samples, context "
          f"{args.context}, horizon {args.horizon}, {torch.get_num_threads()} threads")
    print(f"{'mode':<26} {'seconds':>9} {'x batched':>10}")
    for row in rows:
        print(f"{row['mode']:<26} {row['seconds']:>9.2f} {row['ratio_vs_batched']:>9.2f}x")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
