"""The whole pretraining step on one process: forward + backward + DeepSpeed's optimizer step, by optimizer
implementation (torch's for-loop AdamW, the baseline, vs its fused kernel: `train.fused_adamw`) and ZeRO stage,
plus the bare AdamW step over the model's parameters. Prints a table and writes JSON; every figure is a ratio to
the for-loop row of the same ZeRO stage (or of the bare step), measured in the same run, variants interleaved.

    python benchmarks/optimizer_step.py --config configs/small.yaml --rows 8 --patches 128 --repeats 3 \\
        --out benchmarks/results/optimizer_step_small.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("DS_ACCELERATOR", "cpu")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moe_ts.config import load_model_config  # noqa: E402
from moe_ts.cpu_allocator import tune_cpu_allocator  # noqa: E402
from moe_ts.model import MoiraiMoEModel  # noqa: E402
from pretrain.config import PretrainConfig, TrainConfig  # noqa: E402
from pretrain.engine import build_engine, setup_distributed, train_step  # noqa: E402


def bare_adamw_seconds(model: torch.nn.Module, repeats: int) -> dict[str, float]:
    """Seconds of one AdamW step over the model's parameters (random gradients), per implementation."""
    params = [p for p in model.parameters()]
    for p in params:
        p.grad = torch.randn_like(p)
    kwargs = {"for-loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}
    opts = {name: torch.optim.AdamW(params, lr=1e-3, weight_decay=0.1, **kw) for name, kw in kwargs.items()}
    times: dict[str, list[float]] = {name: [] for name in kwargs}
    for opt in opts.values():
        opt.step()  # creates the state
    for _ in range(repeats):
        for name, opt in opts.items():
            start = time.perf_counter()
            opt.step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/small.yaml")
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--patches", type=int, default=128, help="patches per row (the model's max_seq_len)")
    parser.add_argument("--zero-stages", default="0,1")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    allocator = tune_cpu_allocator()
    torch.set_num_threads(args.threads)
    model_cfg = load_model_config(args.config)
    model_cfg.max_seq_len = args.patches
    torch.manual_seed(0)
    model = MoiraiMoEModel(model_cfg)
    gen = torch.Generator().manual_seed(0)
    batch = {"target": torch.randn(args.rows, args.patches * model_cfg.patch_size, generator=gen).cumsum(1),
             "sample_id": torch.ones(args.rows, args.patches, dtype=torch.long)}
    dist = setup_distributed()
    engines = {}
    for zero in (int(z) for z in args.zero_stages.split(",")):
        for fused in (False, True):
            run = PretrainConfig(model=model_cfg, train=TrainConfig(
                steps=args.repeats + 1, batch_size=args.rows, warmup_steps=0, zero_stage=zero, fused_adamw=fused,
                wandb_mode="disabled"))
            engines[(zero, fused)] = build_engine(run, dist, model=MoiraiMoEModel(model_cfg))
            train_step(engines[(zero, fused)], [batch], dist.device)  # warm-up: optimizer state, buffers
    times: dict[tuple[int, bool], list[float]] = {key: [] for key in engines}
    for rep in range(args.repeats):
        for key in (list(engines) if rep % 2 == 0 else list(engines)[::-1]):
            start = time.perf_counter()
            train_step(engines[key], [batch], dist.device)
            times[key].append(time.perf_counter() - start)
    rows = []
    for (zero, fused), t in times.items():
        base = statistics.median(times[(zero, False)])
        rows.append({"what": f"DeepSpeed step, ZeRO-{zero}", "optimizer": "fused" if fused else "for-loop",
                     "seconds": statistics.median(t), "for_loop_over_this": base / statistics.median(t)})
    bare = bare_adamw_seconds(model, args.repeats)
    for name, sec in bare.items():
        rows.append({"what": "bare AdamW step", "optimizer": name, "seconds": sec,
                     "for_loop_over_this": bare["for-loop"] / sec})
    params = sum(p.numel() for p in model.parameters())
    print(f"{args.config}: {params / 1e6:.1f}M parameters, batch {args.rows} x {args.patches} patches, "
          f"{args.threads} thread(s), median of {args.repeats}; malloc {allocator}")
    print("| what | optimizer | seconds | for-loop s / this s |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['what']} | {r['optimizer']} | {r['seconds']:.3f} | {r['for_loop_over_this']:.2f} |")
    result = {"config": {k: str(v) for k, v in vars(args).items()}, "parameters": params, "rows": rows,
              "cpu_allocator": allocator, "machine": platform.platform(), "torch": torch.__version__,
              "command": "python benchmarks/optimizer_step.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
