"""Group (any-variate) decoding with the KV cache vs re-encoding the row at every step (issue 27).

    python benchmarks/group_decoding.py --config configs/small.yaml --variates 7 --samples 20 --horizon 96 --out benchmarks/results/group_decoding.json

Three ways to decode one group of V variates (plus optional covariates), in the same process:
- "uni2ts (re-standardise)": `decode="uni2ts"`, what `forecast_group` did before the cache: every step
  re-standardises with the sampled patches and re-encodes the whole row;
- "re-encode": `decode="sample", use_kv_cache=False`: the context's statistics, the whole row encoded at every step
  (the reference the cache is tested against: same draws);
- "kv-cache": `decode="sample"`: each step encodes only its new tokens against the cache.
Prints a table and writes JSON; the figures that matter are the ratios against the baselines measured in the same
run (these machines are noisy). Weights are random (the variate bias switched on): speed does not depend on them.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from moe_ts.config import load_model_config
from moe_ts.model import MoiraiMoEModel

MODES = (("uni2ts (re-standardise)", {"decode": "uni2ts"}),
         ("re-encode", {"decode": "sample", "use_kv_cache": False}),
         ("kv-cache", {"decode": "sample", "use_kv_cache": True}))


def time_group(model: MoiraiMoEModel, group: np.ndarray, horizon: int, samples: int, context: int, repeats: int,
               covariates: dict, **decoding: object) -> float:
    """Best wall-clock seconds of `repeats` group forecasts."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        model.forecast_group(group, horizon, num_samples=samples, seed=0, context_length=context, **covariates,
                             **decoding)
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/small.yaml")
    parser.add_argument("--variates", type=int, default=7, help="target variates of the group")
    parser.add_argument("--known-covariates", type=int, default=0, help="known covariates added to the group")
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--context", type=int, default=0, help="context points (0: what fits max_seq_len)")
    parser.add_argument("--horizon", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=1, help="rounds over the modes (interleaved); best of each")
    parser.add_argument("--skip-uni2ts", action="store_true", help="leave out the re-standardising baseline")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    parser.add_argument("--out", default="benchmarks/results/group_decoding.json")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = dataclasses.replace(load_model_config(args.config), variate_bias=True, time_ids="observed")
    torch.manual_seed(0)
    model = MoiraiMoEModel(cfg).eval()
    horizon_patches = -(-args.horizon // cfg.patch_size)
    tokens_per_step = args.variates + args.known_covariates
    v = tokens_per_step
    context = args.context or max((cfg.max_seq_len - horizon_patches * tokens_per_step) // v, 1) * cfg.patch_size
    rng = np.random.default_rng(0)
    t = np.arange(context + args.horizon)
    series = np.stack([np.sin(t / (5 + i)) * 10 + rng.normal(size=len(t)) for i in range(v)]).astype(np.float32)
    group = series[:args.variates, :context]
    covariates = {"known_covariates": {f"k{i}": series[args.variates + i] for i in range(args.known_covariates)}}
    model.forecast_group(group[:, -4 * cfg.patch_size:], 2 * cfg.patch_size, num_samples=2)  # warm-up
    modes = [(name, decoding) for name, decoding in MODES if not (args.skip_uni2ts and decoding["decode"] == "uni2ts")]
    best = {name: float("inf") for name, _ in modes}
    for _ in range(args.repeats):  # the modes interleaved, so a load change on the machine hits them alike
        for name, decoding in modes:
            best[name] = min(best[name], time_group(model, group, args.horizon, args.samples, context, 1,
                                                    covariates, **decoding))
    rows = [{"mode": name, "seconds": best[name], "steps_per_s": args.variates * args.samples * args.horizon / best[name]}
            for name, _ in modes]
    by_name = {row["mode"]: row["seconds"] for row in rows}
    for row in rows:
        row["speedup_vs_reencode"] = by_name["re-encode"] / row["seconds"]
        if "uni2ts (re-standardise)" in by_name:
            row["speedup_vs_uni2ts"] = by_name["uni2ts (re-standardise)"] / row["seconds"]
    result = {
        "benchmark": "group_decoding", "config": args.config, "variates": args.variates,
        "known_covariates": args.known_covariates, "samples": args.samples, "context": context,
        "horizon": args.horizon, "row_tokens": v * (-(-context // cfg.patch_size)), "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
        "params_total": model.num_parameters(), "params_active": model.num_parameters(active=True), "rows": rows,
    }
    print(f"group decoding: {args.config}, {args.variates} variates + {args.known_covariates} known covariates, "
          f"{args.samples} samples, context {context}, horizon {args.horizon}")
    print(f"{'mode':<24} {'seconds':>9} {'steps/s':>10} {'vs re-encode':>13} {'vs uni2ts':>10}")
    for row in rows:
        vs_uni2ts = f"{row['speedup_vs_uni2ts']:>9.2f}x" if "speedup_vs_uni2ts" in row else f"{'-':>10}"
        print(f"{row['mode']:<24} {row['seconds']:>9.2f} {row['steps_per_s']:>10.0f} "
              f"{row['speedup_vs_reencode']:>12.2f}x {vs_uni2ts}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
