"""Finetune a pretrained model on one dataset and evaluate it on the test split (docs/ARCHITECTURE.md §8).

    moe-ts finetune --checkpoint DIR --method msft|full|head|lora --dataset NAME --out OUT
        [--data-dir DIR] [--steps N] [--batch-size B] [--lr LR] [--window W] [--eval-every N] [--patience N]
        [--num-scales K] [--lora-rank R] [--lora-alpha A] [--freeze-gates] [--train-experts] [--seed S]
        [--no-eval] [--eval-max-windows N] [--eval-stride N] [--num-samples S] [--overwrite]

NAME is a registered LSF dataset (ETTh1, ETTh2, ...): the model trains on its training split, stops
early on its validation split, and is evaluated on its test split by `moe-ts eval` (OUT/eval:
results.csv, results.md). OUT is a Hugging Face folder: `MSFTModel` for msft (config.json holds
{"model", "msft"}), a plain `MoiraiMoEModel` for full, head and lora (LoRA merged into Q/K/V);
OUT/finetune.json records the run (method, trainable parameters, time per step, validation history).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from finetune.data import lsf_splits
from finetune.train import METHODS, FinetuneConfig, finetune, prepare_model, releasable
from moe_ts.output_dir import check_output_dir

REPORT_FILE = "finetune.json"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="moe-ts finetune", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="pretrained Hugging Face folder")
    p.add_argument("--method", required=True, help=f"one of {', '.join(METHODS)}")
    p.add_argument("--dataset", required=True, help="registered LSF dataset (etth1, etth2, ettm1, ...)")
    p.add_argument("--out", required=True, type=Path, help="output folder (the finetuned model)")
    p.add_argument("--data-dir", help="data folder (default: $MOE_TS_DATA_DIR, else <repo>/data)")
    d = FinetuneConfig()
    for name, typ in (("steps", int), ("batch_size", int), ("lr", float), ("window", int), ("eval_every", int),
                      ("patience", int), ("num_scales", int), ("lora_rank", int), ("lora_alpha", float),
                      ("seed", int), ("weight_decay", float)):
        p.add_argument(f"--{name.replace('_', '-')}", type=typ, default=getattr(d, name),
                       help=f"default {getattr(d, name)}")
    p.add_argument("--freeze-gates", action="store_true", help="msft: keep the MoE gates frozen")
    p.add_argument("--train-experts", action="store_true", help="msft: train the experts too")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--no-eval", action="store_true", help="skip the test-split evaluation")
    p.add_argument("--eval-max-windows", type=int, default=None, help="test windows per channel (evenly thinned)")
    p.add_argument("--eval-stride", type=int, default=1, help="test window stride (1 = the published protocol)")
    p.add_argument("--num-samples", type=int, default=100, help="forecast samples in the evaluation")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out moe-ts did not write")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = FinetuneConfig(method=args.method, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                         window=args.window, eval_every=args.eval_every, patience=args.patience,
                         num_scales=args.num_scales, lora_rank=args.lora_rank, lora_alpha=args.lora_alpha,
                         train_gates=not args.freeze_gates, train_experts=args.train_experts, seed=args.seed,
                         weight_decay=args.weight_decay)
    check_output_dir(args.out, args.overwrite)
    torch.set_num_threads(args.threads)
    from moe_ts.model import MoiraiMoEModel

    base = MoiraiMoEModel.from_pretrained(args.checkpoint)
    model = prepare_model(base, cfg, args.checkpoint)
    splits = lsf_splits(args.dataset, args.data_dir)
    t0 = time.time()
    result = finetune(model, splits, cfg)
    releasable(model).save_pretrained(args.out, overwrite=args.overwrite)
    report = {"checkpoint": str(args.checkpoint), "dataset": splits.name, "borders": list(splits.borders),
              "config": asdict(cfg), "result": asdict(result), "seconds": round(time.time() - t0, 2)}
    (args.out / REPORT_FILE).write_text(json.dumps(report, indent=1) + "\n")
    print(f"finetune {cfg.method}: best validation loss {result.best_val:.4f} at step {result.best_step} "
          f"(zero-shot {result.zero_shot_val:.4f}); {result.steps_run} steps, {result.seconds_per_step * 1000:.0f} "
          f"ms/step; {result.trainable_params:,} of {result.total_params:,} parameters trained; wrote {args.out}")
    if not args.no_eval:
        from eval.run import main as eval_main

        eval_args = ["--checkpoint", str(args.out), "--suite", "lsf", "--datasets", splits.name,
                     "--out", str(args.out / "eval"), "--plot-series", "0", "--baselines", "snaive",
                     "--num-samples", str(args.num_samples), "--lsf-stride", str(args.eval_stride)]
        if args.data_dir:
            eval_args += ["--data-dir", args.data_dir]
        if args.eval_max_windows:
            eval_args += ["--max-windows", str(args.eval_max_windows)]
        return eval_main(eval_args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
