"""Compute scaling of the pretraining recipe: the same recipe at several step budgets, evaluated zero-shot.

    python benchmarks/compute_scaling.py --data runs/demo/corpus --configs configs/tiny.yaml \
        --steps 5000,15000,45000 --out runs/scaling --json benchmarks/results/compute_scaling.json

For every (config, steps) pair: `moe-ts pretrain` with `--steps` (the cosine schedule spans the whole
budget; no wall-clock cap), then `moe-ts eval` on the probes, the Monash suite and the LSF suite
(every 96th window). Each figure is the suite's geometric mean relative to Seasonal Naive, measured
on the same instances in the same evaluation (lower is better; 1.0 = Seasonal Naive). The compute axis
is 6 x active parameters x patches seen (steps x batch x max_seq_len, an upper bound: packing leaves
some slots empty), comparable across configs. Finished steps
are skipped when their folders hold results, so an interrupted sweep continues where it stopped.
Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

SUITES = {  # suite -> extra eval arguments
    "probes": [],
    "monash": ["--num-samples", "100"],
    "lsf": ["--num-samples", "50", "--lsf-stride", "96"],
}


def run(cmd: list[str], log: Path) -> None:
    """Run a command, appending its output to `log`; raise with the log's tail on failure."""
    with open(log, "a") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=os.environ.copy())
    if proc.returncode:
        tail = log.read_text().splitlines()[-5:]
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed (exit {proc.returncode}); see {log}:\n" + "\n".join(tail))


def aggregates(eval_dir: Path) -> dict[str, float]:
    """{'<suite> <metric>': model's geometric mean relative to Seasonal Naive} from aggregate.csv."""
    out = {}
    with open(eval_dir / "aggregate.csv") as fh:
        for row in csv.DictReader(fh):
            if row["role"] == "model":
                out[f"{row['suite']} {row['metric']}"] = float(row["geomean_relative_to_seasonal_naive"])
    return out


def training_compute(config: Path, steps: int) -> dict[str, float]:
    """Active parameters per token and the 6·N·D estimate of training PFLOP for `steps` of `config`."""
    from moe_ts.network import MoiraiMoENetwork
    from pretrain.config import load_pretrain_config

    run = load_pretrain_config(config)
    active = MoiraiMoENetwork(run.model).num_parameters(active=True)
    patches = steps * run.train.batch_size * run.model.max_seq_len
    return {"active_params": active, "train_pflop": round(6 * active * patches / 1e15, 3)}


def one_point(config: Path, steps: int, data: Path, out: Path, log: Path, suites: list[str]) -> dict:
    """Pretrain `config` for `steps` and evaluate it; reuses finished parts."""
    run_dir = out / f"{config.stem}-{steps}"
    final = run_dir / "final"
    t0 = time.perf_counter()
    if not (final / "model.safetensors").is_file():
        cmd = [sys.executable, "-m", "pretrain.train", "--config", str(config), "--data", str(data),
               "--out", str(run_dir), "--steps", str(steps), "--time-budget", str(10**7)]
        if (run_dir / "checkpoints").is_dir():
            cmd.append("--resume")
        run(cmd, log)
    train_s = time.perf_counter() - t0
    point = {"config": str(config), "steps": steps, "train_seconds_this_call": round(train_s, 1),
             **training_compute(config, steps)}
    for suite in suites:
        extra = SUITES[suite]
        eval_dir = run_dir / f"eval_{suite}"
        if not (eval_dir / "aggregate.csv").is_file():
            run([sys.executable, "-m", "eval.run", "--checkpoint", str(final), "--suite", suite,
                 "--out", str(eval_dir), "--plot-series", "0", *extra], log)
        point.update(aggregates(eval_dir))
    return point


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="corpus folder (moe-ts prepare)")
    p.add_argument("--configs", default="configs/tiny.yaml", help="comma-separated run YAMLs")
    p.add_argument("--steps", default="5000,15000,45000", help="comma-separated step budgets")
    p.add_argument("--out", type=Path, default=Path("runs/scaling"))
    p.add_argument("--json", type=Path, default=Path("benchmarks/results/compute_scaling.json"))
    p.add_argument("--suites", default=",".join(SUITES), help=f"comma-separated, of {', '.join(SUITES)}")
    args = p.parse_args(argv)
    suites = [s for s in args.suites.split(",") if s]
    unknown = sorted(set(suites) - set(SUITES))
    if unknown:
        p.error(f"--suites: unknown {unknown}; known: {', '.join(SUITES)}")
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "scaling.log"
    points = []
    for config in [Path(c) for c in args.configs.split(",")]:
        for steps in [int(s) for s in args.steps.split(",")]:
            points.append(one_point(config, steps, args.data, args.out, log, suites))
            print(json.dumps(points[-1]), flush=True)
    keys = sorted({k for pt in points for k in pt if " " in k})
    print("\n| config | steps | active params | PFLOP (6ND) | " + " | ".join(keys) + " |")
    print("|---|---|---|---|" + "---|" * len(keys))
    for pt in points:
        print(f"| {Path(pt['config']).stem} | {pt['steps']} | {pt['active_params']:,} | {pt['train_pflop']:.3f} | "
              + " | ".join(f"{pt.get(k, float('nan')):.3f}" for k in keys) + " |")
    result = {"benchmark": "compute_scaling", "baseline": "Seasonal Naive (same instances, same run)",
              "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "points": points}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
