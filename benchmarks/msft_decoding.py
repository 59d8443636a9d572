"""MSFT forecasting with the KV cache vs re-encoding the multi-scale sequence at every step (issue 27).

    python benchmarks/msft_decoding.py --config configs/small.yaml --num-scales 3 --series 4 --samples 20 --horizons 96 336 --threads 1 --out benchmarks/results/msft_decoding.json

Two ways to decode an MSFT model (docs/ARCHITECTURE.md §9), in the same process, interleaved, best of --repeats:
- "re-encode": `use_kv_cache=False`, the whole multi-scale sequence (all scales' tokens) encoded at every fine step
  (the reference the cache is tested against: same draws);
- "kv-cache": the default, the context encoded once, then one new token per scale whose patch ended at the step.
Prints a table and writes JSON; the figure that matters is the ratio against re-encoding measured in the same run
(these machines are noisy). As a check it reports the largest difference between the two modes' samples and the
share of sample values within 1e-3 of each other: the hidden states agree to ~1e-5, but the mixture's Gamma
and Poisson draws (Student-t, negative binomial) are rejection samplers, so a parameter that differs at 1e-6 can
once take a different number of random numbers, and every later draw of that forecast then comes from a shifted
stream (a long horizon may show a large max |diff| with a share below 1). Weights are random (LoRA and aggregator
maps non-zero, as after training): speed does not depend on them.
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
from moe_ts.msft.forecasting import default_context_length
from moe_ts.msft.model import MSFTModel
from moe_ts.msft.network import MSFTConfig

MODES = (("re-encode", False), ("kv-cache", True))


def timed_forecast(net: MSFTModel, contexts: list[np.ndarray], horizon: int, samples: int, context: int,
                   use_kv_cache: bool) -> tuple[float, np.ndarray]:
    """Wall-clock seconds of one forecast and its samples."""
    start = time.perf_counter()
    out = net.forecast(contexts, horizon, num_samples=samples, seed=0, context_length=context,
                       use_kv_cache=use_kv_cache)
    return time.perf_counter() - start, out.samples


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/small.yaml")
    parser.add_argument("--num-scales", type=int, default=3, help="MSFT's extra scales K")
    parser.add_argument("--series", type=int, default=4)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--context", type=int, default=0, help="context points (0: the MSFT default, half the window)")
    parser.add_argument("--horizons", type=int, nargs="+", default=[96, 336])
    parser.add_argument("--repeats", type=int, default=1, help="rounds over the modes (interleaved); best of each")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    parser.add_argument("--out", default="benchmarks/results/msft_decoding.json")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base = MoiraiMoEModel(load_model_config(args.config)).eval()
    net = MSFTModel.from_network(base, MSFTConfig(num_scales=args.num_scales)).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-zero LoRA B and aggregator maps, as after training
        for name, p in net.named_parameters():
            if "lora_b" in name or "aggregators" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    cfg = net.config
    context = args.context or default_context_length(net)
    rng = np.random.default_rng(0)
    t = np.arange(context)
    contexts = [(np.sin(t / (5 + i)) * 10 + rng.normal(size=context)).astype(np.float32) for i in range(args.series)]
    net.forecast([c[-net.msft.pool * cfg.patch_size:] for c in contexts], cfg.patch_size, num_samples=2)  # warm-up
    rows = []
    for horizon in args.horizons:
        best = {name: float("inf") for name, _ in MODES}
        samples = {}
        for _ in range(args.repeats):
            for name, use_cache in MODES:
                seconds, samples[name] = timed_forecast(net, contexts, horizon, args.samples, context, use_cache)
                best[name] = min(best[name], seconds)
        rows.append({"horizon": horizon, "fine_steps": -(-horizon // cfg.patch_size),
                     "reencode_s": best["re-encode"], "kv_cache_s": best["kv-cache"],
                     "speedup_vs_reencode": best["re-encode"] / best["kv-cache"],
                     "max_abs_diff": float(np.abs(samples["re-encode"] - samples["kv-cache"]).max()),
                     "share_within_1e-3": float((np.abs(samples["re-encode"] - samples["kv-cache"]) <= 1e-3).mean())})
    fine_tokens = context // cfg.patch_size
    result = {
        "benchmark": "msft_decoding", "config": args.config, "num_scales": args.num_scales, "series": args.series,
        "samples": args.samples, "context": context,
        "context_tokens": sum(fine_tokens // 2 ** i for i in range(args.num_scales + 1)),
        "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__, "rows": rows,
    }
    print(f"MSFT decoding: {args.config}, K={args.num_scales} extra scales, {args.series} series, {args.samples} "
          f"samples, context {context} ({result['context_tokens']} tokens over all scales), "
          f"{result['threads']} threads")
    print(f"{'horizon':>8} {'steps':>6} {'re-encode s':>12} {'kv-cache s':>11} {'vs re-encode':>13} {'max |diff|':>11} {'≤1e-3':>6}")
    for row in rows:
        print(f"{row['horizon']:>8} {row['fine_steps']:>6} {row['reencode_s']:>12.2f} {row['kv_cache_s']:>11.2f} "
              f"{row['speedup_vs_reencode']:>12.2f}x {row['max_abs_diff']:>11.2e} {row['share_within_1e-3']:>6.3f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
