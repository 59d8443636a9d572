"""Gate ablation (issue 9; docs/ARCHITECTURE.md §9): linear router vs centroid (nearest) vs centroid (farthest)
vs dense at equal active compute, same corpus, same number of optimizer steps.

    python benchmarks/gate_ablation.py --corpus runs/demo/corpus --config configs/tiny.yaml \
        --steps-a 500 --steps-b 500 --work /tmp/ablation --out benchmarks/results/gate_ablation.json

Arms (all `--config`'s model size, batch and schedule shape; S = steps-a + steps-b optimizer steps each):
- linear: the config's linear-gated MoE, S steps from scratch (its step-`steps-a` model is kept);
- centroid-nearest / centroid-farthest: `moe-ts centroids` on the linear arm's step-`steps-a` model (its
  experts matched to the clusters), then `moe-ts pretrain --init` for `steps-b` steps;
- dense: one expert per layer with d_ff = top_k · d_ff (the same active FFN FLOPs), S steps from scratch.
Every run warms up for min(the config's warmup, steps-b / 5) steps (a continuation restarts its schedule).
Each final model is evaluated zero-shot on LSF ETTh1/ETTh2 (subsampled test windows, median decoding,
Seasonal Naive beside it), and run over a fixed corpus sample for the per-layer expert load (min / max
share × E, normalised entropy) and routing consistency (share of tokens whose top-1 expert is unchanged
when N(0, 0.1²) noise is added to the normalised inputs). Prints a table and writes JSON (+ a PNG plot).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval.protocols import TaskOptions  # noqa: E402
from eval.runner import MODEL, SNAIVE, EvalConfig, run_suite  # noqa: E402
from moe_ts.model import MoiraiMoEModel  # noqa: E402
from moe_ts.packing import PackedLayout, masked_stats, patchify, standardise  # noqa: E402

ARMS = ("linear", "centroid-nearest", "centroid-farthest", "dense")


def cli(*args: str) -> None:
    cmd = [sys.executable, "-m", "cli", *args]
    print("$ moe-ts " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                   stdout=subprocess.DEVNULL)


@torch.no_grad()
def routing_stats(model: MoiraiMoEModel, batch: dict, noise: float = 0.1) -> list[dict]:
    """Per layer: expert load (min / max share × E, entropy / log E) and top-1 agreement under input noise."""
    cfg = model.config
    values, observed = patchify(batch["target"], cfg.patch_size)
    layout = PackedLayout.from_sample_id(batch["sample_id"])
    loc, scale, _ = masked_stats(values, observed, layout.sample_id > 0, layout.sample_id, cfg.min_scale)
    normed = standardise(values, observed, loc, scale, cfg.missing_values)
    real = (layout.sample_id > 0).reshape(-1)
    captured: dict[int, torch.Tensor] = {}
    hooks = [layer.moe.register_forward_pre_hook(lambda _m, a, i=i: captured.__setitem__(i, a[0]))
             for i, layer in enumerate(model.layers)]
    top1 = []
    for x in (normed, normed + noise * torch.randn_like(normed) * observed):
        model(x, layout.position, layout.attention_mask(), token_mask_bn=layout.sample_id > 0)
        top1.append([model.layers[i].moe.route(captured[i]).expert_ids for i in range(len(model.layers))])
    for h in hooks:
        h.remove()
    e = cfg.moe.num_experts
    out = []
    for i in range(len(model.layers)):
        ids = top1[0][i][real]
        counts = torch.bincount(ids.reshape(-1), minlength=e).double()
        share = counts / counts.sum()
        entropy = float(-(share[share > 0] * share[share > 0].log()).sum() / math.log(e)) if e > 1 else 1.0
        agree = float((top1[0][i][real, 0] == top1[1][i][real, 0]).double().mean())
        out.append({"layer": i, "min_share_x_E": float(share.min() * e), "max_share_x_E": float(share.max() * e),
                    "entropy": entropy, "top1_consistency": agree})
    return out


def evaluate(model: MoiraiMoEModel, datasets: list[str], data_dir: str | None, max_windows: int, samples: int) -> dict:
    cfg = EvalConfig(num_samples=samples, seed=0, plot_series=0, model_kwargs={"decode": "median"})
    result = run_suite("lsf", datasets, model, data_dir, TaskOptions(max_windows=max_windows), cfg, log=None,
                       baselines=())
    out: dict = {}
    for t in result.tasks:
        out.setdefault(t.dataset, {})[t.horizon] = {r: {m: t.metrics[r][m].value for m in ("MSE", "MAE")}
                                                    for r in (MODEL, SNAIVE)}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", required=True)
    p.add_argument("--config", default=str(ROOT / "configs" / "tiny.yaml"))
    p.add_argument("--steps-a", type=int, default=500)
    p.add_argument("--steps-b", type=int, default=500)
    p.add_argument("--num-windows", type=int, default=128, help="moe-ts centroids --num-windows")
    p.add_argument("--datasets", default="etth1,etth2")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--max-windows", type=int, default=6)
    p.add_argument("--num-samples", type=int, default=20)
    p.add_argument("--work", type=Path, required=True, help="scratch folder for the runs (replaced)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True)
    run = yaml.safe_load(Path(args.config).read_text())
    total = args.steps_a + args.steps_b
    # every run (including the steps-b continuations) warms up for at most a fifth of the shortest run
    run["train"]["warmup_steps"] = min(run["train"].get("warmup_steps", 100), max(1, args.steps_b // 5))
    dense = json.loads(json.dumps(run))
    moe = dense["model"]["moe"]
    dense["model"]["moe"] = {**moe, "num_experts": 1, "top_k": 1, "d_ff": moe.get("top_k", 2) * moe["d_ff"]}
    (args.work / "moe.yaml").write_text(yaml.safe_dump(run))
    (args.work / "dense.yaml").write_text(yaml.safe_dump(dense))
    w = args.work
    t0 = time.time()
    seconds = {}
    t = time.time()
    cli("pretrain", "--config", str(w / "moe.yaml"), "--data", args.corpus, "--out", str(w / "linear"),
        "--steps", str(total), "--stop-at", str(args.steps_a))
    shutil.copytree(w / "linear" / "final", w / "linear_a")
    cli("pretrain", "--config", str(w / "moe.yaml"), "--data", args.corpus, "--out", str(w / "linear"),
        "--steps", str(total), "--resume")
    seconds["linear"] = time.time() - t
    for select in ("nearest", "farthest"):
        t = time.time()
        cli("centroids", "--checkpoint", str(w / "linear_a"), "--data", args.corpus, "--out", str(w / f"cent_{select}"),
            "--num-windows", str(args.num_windows), "--select", select)
        cli("pretrain", "--config", str(w / "moe.yaml"), "--data", args.corpus, "--out", str(w / f"centroid-{select}"),
            "--steps", str(args.steps_b), "--init", str(w / f"cent_{select}"))
        seconds[f"centroid-{select}"] = time.time() - t
    t = time.time()
    cli("pretrain", "--config", str(w / "dense.yaml"), "--data", args.corpus, "--out", str(w / "dense"),
        "--steps", str(total))
    seconds["dense"] = time.time() - t

    from data_prep.corpus import open_corpus
    from pretrain.data import WindowSampler

    datasets = args.datasets.split(",")
    rows = []
    for arm in ARMS:
        model = MoiraiMoEModel.from_pretrained(w / arm / "final")
        sampler = WindowSampler(open_corpus(args.corpus), patch_size=model.config.patch_size,
                                seq_patches=model.config.max_seq_len, seed=123)
        torch.manual_seed(0)
        routing = routing_stats(model, sampler.next_batch(16)) if model.config.moe.num_experts > 1 else []
        metrics = evaluate(model, datasets, args.data_dir, args.max_windows, args.num_samples)
        final_loss = [json.loads(line) for line in (w / arm / "metrics.jsonl").read_text().splitlines()][-1]
        rows.append({"arm": arm, "active_params": model.num_parameters(active=True),
                     "total_params": model.num_parameters(), "final_train_nll": final_loss["nll"],
                     "routing": routing, "metrics": metrics, "train_seconds": seconds[arm]})
    horizons = sorted(next(iter(rows[0]["metrics"].values())))
    ref = rows[0]
    print(f"\nsteps {total} per arm ({args.steps_a} + {args.steps_b} for the centroid arms); {time.time() - t0:.0f} s")
    print("| arm | active params | train NLL (last) | " + " | ".join(f"{d} MSE mean" for d in datasets)
          + " | MSE × linear | per-layer load min/max ×E | entropy | top-1 consistency |")
    print("|" + "---|" * (7 + len(datasets)))
    for r in rows:
        mse = [float(np.mean([r["metrics"][d][h][MODEL]["MSE"] for h in horizons])) for d in datasets]
        ref_mse = [float(np.mean([ref["metrics"][d][h][MODEL]["MSE"] for h in horizons])) for d in datasets]
        r["mse_mean"] = dict(zip(datasets, mse))
        r["mse_vs_linear"] = float(np.exp(np.mean(np.log(np.array(mse) / np.array(ref_mse)))))
        load = "; ".join(f"{x['min_share_x_E']:.2f}/{x['max_share_x_E']:.2f}" for x in r["routing"]) or "n/a"
        ent = "; ".join(f"{x['entropy']:.3f}" for x in r["routing"]) or "n/a"
        cons = "; ".join(f"{x['top1_consistency']:.3f}" for x in r["routing"]) or "n/a"
        print(f"| {r['arm']} | {r['active_params']:,} | {r['final_train_nll']:.4f} | "
              + " | ".join(f"{m:.3f}" for m in mse) + f" | {r['mse_vs_linear']:.3f} | {load} | {ent} | {cons} |")
    sn = {d: float(np.mean([ref["metrics"][d][h][SNAIVE]["MSE"] for h in horizons])) for d in datasets}
    print("Seasonal Naive MSE mean: " + ", ".join(f"{d} {v:.3f}" for d, v in sn.items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows,
                                    "seasonal_naive_mse": sn}, indent=1) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3))
        xs = np.arange(len(rows))
        for k, d in enumerate(datasets):
            ax.bar(xs + k * 0.4, [r["mse_mean"][d] for r in rows], 0.4, label=d)
        ax.set_xticks(xs + 0.2, [r["arm"] for r in rows], fontsize=8)
        ax.set_ylabel("LSF MSE (mean of 4 horizons)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.out.with_suffix(".png"), dpi=100)
    except ImportError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
