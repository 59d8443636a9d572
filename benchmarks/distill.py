"""TimeDistill comparison: the MoE teacher vs MLP student trained on the truth only vs distilled students.

    python benchmarks/distill.py --teacher runs/b/final --max-windows 5000 \
        --tasks etth1:96,etth2:96,etth1:192,etth2:192,m4_hourly:48,nn5_daily:56 --out benchmarks/results/distill.json

For each dataset:horizon, in one process: the training / validation windows of `distill.data` (the test
span is never read), the teacher's cached forecasts and features on the training windows, students with the
same seed and width (α = β = 0, and each α:β of `--variants`), then every model on the dataset's test instances
(`eval.protocols.build_tasks`, the same instances for all; LSF every `--lsf-stride`-th window) and Seasonal Naive
for reference. Reported per model: accuracy (MSE / MAE; MASE too on Monash sets), parameters and forecast
throughput (series/s, batch 256, best of `--repeats`), each as a ratio against the teacher measured in this run.
The teacher forecasts with `--teacher-decode` and `--teacher-samples`, as during distillation. Students are
point forecasts (CRPS and MSIS of a point forecast are not comparable, so they are not shown).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from data_prep.registry import get_spec
from eval.baselines import SeasonalNaive
from eval.protocols import Task, TaskOptions, build_tasks
from eval.runner import MODEL, EvalConfig, evaluate_task
from moe_ts.model import MoiraiMoEModel
from distill.train import DistillConfig, check_teacher_serves, load_teacher, teacher_targets, train_student
from distill.data import dataset_windows
from distill.teacher_cache import TeacherSettings

MONASH_CONTEXT = 336  # the Monash sets' series are too short for the registry's 1000; every model gets this


def _task(name: str, horizon: int, context: int, args: argparse.Namespace) -> Task:
    spec = get_spec(name)
    suite = "lsf" if "lsf" in spec.suites else spec.suites[0]
    options = TaskOptions(context_length=context, lsf_stride=args.lsf_stride if suite == "lsf" else 1)
    tasks = [t for t in build_tasks(name, suite, args.data_dir, options) if t.horizon == horizon]
    if not tasks:
        raise ValueError(f"{name}: no test task with horizon {horizon} (horizons: {spec.prediction_lengths})")
    return tasks[0]


def _throughput(model, contexts: list[np.ndarray], horizon: int, kwargs: dict, repeats: int) -> float:
    """Series per second, best of `repeats`, one batch of len(contexts)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        model.forecast(contexts, horizon, batch_size=len(contexts), **kwargs)
        best = min(best, time.perf_counter() - start)
    return len(contexts) / best


def run_one(teacher: MoiraiMoEModel, name: str, horizon: int, args: argparse.Namespace) -> dict:
    spec = get_spec(name)
    lsf = "lsf" in spec.suites
    context = args.context if lsf else MONASH_CONTEXT
    check_teacher_serves(teacher, context, horizon)
    t0 = time.perf_counter()
    data = dataset_windows(name, args.data_dir, context, horizon, args.stride, args.max_windows, args.max_val_windows)
    print(data.description, file=sys.stderr)
    settings = TeacherSettings(num_samples=args.teacher_samples, decode=args.teacher_decode, seed=args.seed)
    base = dict(context_length=context, horizon=horizon, hidden=args.hidden, epochs=args.epochs, patience=args.patience,
                batch_size=args.batch_size, lr=args.lr, seed=args.seed, teacher=settings)
    variants = [tuple(float(x) for x in v.split(":")) for v in args.variants.split(",")]
    targets = teacher_targets(teacher, data, DistillConfig(**base), args.cache_dir,
                              log=lambda m: print(m, file=sys.stderr))
    teacher_seconds = time.perf_counter() - t0
    students = {}
    configs = [("student (truth only)", DistillConfig(alpha=0.0, beta=0.0, **base))]
    configs += [(f"student (distilled, a={a:g} b={b:g})", DistillConfig(alpha=a, beta=b, **base)) for a, b in variants]
    for label, cfg in configs:
        t1 = time.perf_counter()
        students[label], history = train_student(data, cfg, targets if cfg.uses_teacher else None)
        best = min(history, key=lambda r: r["val_mse"])
        print(f"  {label}: {len(history)} epochs, best val MSE {best['val_mse']:.4g} at epoch {best['epoch']} "
              f"({time.perf_counter() - t1:.1f}s)", file=sys.stderr)
    task = _task(name, horizon, context, args)
    teacher_kwargs = {"num_samples": args.teacher_samples, "decode": args.teacher_decode, "allow_short_context": True}
    models = {"teacher": (teacher, teacher_kwargs)}
    models.update({k: (m, {"allow_short_context": True}) for k, m in students.items()})
    rows = []
    sample = task.contexts(np.arange(min(len(task), args.throughput_batch)))
    sample = (sample * (args.throughput_batch // len(sample) + 1))[:args.throughput_batch]
    for label, (model, kwargs) in models.items():
        extra = {k: v for k, v in kwargs.items() if k != "num_samples"}
        cfg = EvalConfig(num_samples=kwargs.get("num_samples", 1), batch_size=256, seed=args.seed, plot_series=0,
                        model_kwargs=extra)
        result = evaluate_task(task, {MODEL: model}, cfg)
        metrics = {k: v.value for k, v in result.metrics[MODEL].items()}
        rows.append({"model": label, "parameters": model.num_parameters(), "metrics": metrics,
                     "series_per_s": _throughput(model, sample, horizon, kwargs, args.repeats)})
    snaive = evaluate_task(task, {MODEL: SeasonalNaive()}, EvalConfig(num_samples=1, plot_series=0))
    rows.append({"model": "seasonal naive", "parameters": 0,
                 "metrics": {k: v.value for k, v in snaive.metrics[MODEL].items()}, "series_per_s": None})
    ref = rows[0]
    for row in rows:
        row["ratios_vs_teacher"] = {
            **{m: row["metrics"][m] / ref["metrics"][m] for m in ("MSE", "MAE", "MASE") if m in row["metrics"]},
            "parameters": (ref["parameters"] / row["parameters"]) if row["parameters"] else None,
            "speedup": (row["series_per_s"] / ref["series_per_s"]) if row["series_per_s"] else None,
        }
    return {"dataset": name, "horizon": horizon, "context": context, "test_instances": len(task),
            "sampling": task.sampling.describe(), "data": data.description,
            "teacher_outputs_seconds": teacher_seconds, "rows": rows}


def table(results: list[dict]) -> str:
    lines = ["| dataset | h | model | MSE | MAE | MASE | MSE / teacher | MAE / teacher | params | teacher params / params "
             "| series/s | speedup |", "|" + "---|" * 12]
    for res in results:
        for row in res["rows"]:
            m, r = row["metrics"], row["ratios_vs_teacher"]
            fmt = lambda v, f="{:.4g}": "" if v is None else f.format(v)  # noqa: E731
            lines.append(f"| {res['dataset']} | {res['horizon']} | {row['model']} | {fmt(m.get('MSE'))} | "
                         f"{fmt(m.get('MAE'))} | {fmt(m.get('MASE'))} | {fmt(r.get('MSE'), '{:.3f}')} | "
                         f"{fmt(r.get('MAE'), '{:.3f}')} | {row['parameters']:,} | {fmt(r['parameters'], '{:.2f}x')} | "
                         f"{fmt(row['series_per_s'], '{:.0f}')} | {fmt(r['speedup'], '{:.1f}x')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True)
    p.add_argument("--tasks", default="etth1:96,etth2:96,m4_hourly:48,nn5_daily:56", help="dataset:horizon,...")
    p.add_argument("--data-dir")
    p.add_argument("--context", type=int, default=512, help="LSF context (Monash sets use 336)")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--variants", default="1:1,1:0,0.1:0.1",
                   help="distilled students, alpha:beta,... (default: the paper's 1:1, forecast terms only, a light touch)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stride", type=int, default=1, help="training window stride")
    p.add_argument("--max-windows", type=int, default=8000)
    p.add_argument("--max-val-windows", type=int, default=2000)
    p.add_argument("--lsf-stride", type=int, default=8, help="LSF test window stride (1 = the published protocol)")
    p.add_argument("--teacher-samples", type=int, default=20)
    p.add_argument("--teacher-decode", default="median", choices=("median", "mean", "sample"))
    p.add_argument("--throughput-batch", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache-dir", type=Path, default=Path("benchmarks/results/.teacher-cache"))
    p.add_argument("--out", default="benchmarks/results/distill.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    teacher = load_teacher(args.teacher)
    results = []
    for item in args.tasks.split(","):
        name, _, h = item.partition(":")
        results.append(run_one(teacher, name.strip(), int(h), args))
        print(table(results[-1:]), file=sys.stderr)
    text = table(results)
    print(text)
    out = {"command": "python benchmarks/distill.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "args": {k: str(v) for k, v in vars(args).items()}, "machine": platform.platform(),
           "torch": torch.__version__, "threads": args.threads, "results": results, "table": text}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
