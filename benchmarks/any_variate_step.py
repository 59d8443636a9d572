"""Cost of any-variate pretraining (issue 27): batch making and the training step at `train.multivariate_share` 0
and s, on the tiny config's model, interleaved A/B so that a busy machine slows both alike.

    python benchmarks/any_variate_step.py [--share 0.3] [--rounds 5] [--steps 10] [--config configs/tiny.yaml]

A synthetic corpus of 200 groups of 2-8 variates and 400 single series (lengths 100-2000) is written to a temporary
folder. Prints the median time per micro-batch of each sampler and per optimizer step (forward, backward, AdamW) at share 0,
at share s, and at share s with the variate bias, one torch thread.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from data_prep.corpus import open_corpus
from moe_ts.network import MoiraiMoENetwork
from moe_ts.objectives import pretrain_loss
from pretrain.batch_sampler import VectorisedSampler
from pretrain.config import load_pretrain_config
from pretrain.data import WindowSampler
from pretrain.variate_batch_sampler import AnyVariateVectorisedSampler
from pretrain.variate_groups import AnyVariateSampler


def write_corpus(path: Path) -> None:
    import datasets

    rng = np.random.default_rng(0)
    cols = {k: [] for k in ("item_id", "dataset", "target", "group_id", "variate")}
    for g in range(200):
        length, v = int(rng.integers(100, 2000)), int(rng.integers(2, 9))
        base = np.sin(np.arange(length) / rng.uniform(3, 30))
        for i in range(v):
            cols["item_id"].append(f"g{g}/{i}"); cols["dataset"].append("multi"); cols["group_id"].append(f"g{g}")
            cols["variate"].append(i)
            cols["target"].append((base * rng.uniform(0.5, 3) + rng.normal(size=length) * 0.3).astype(np.float32))
    for u in range(400):
        length = int(rng.integers(100, 2000))
        cols["item_id"].append(f"u{u}"); cols["dataset"].append("uni"); cols["group_id"].append(f"u{u}")
        cols["variate"].append(0); cols["target"].append(np.cumsum(rng.normal(size=length)).astype(np.float32))
    cols["target"] = [t.tolist() for t in cols["target"]]
    datasets.Dataset.from_dict(cols).save_to_disk(str(path))
    (path / "manifest.json").write_text(json.dumps({"complete": True}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/tiny.yaml")
    ap.add_argument("--share", type=float, default=0.3)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(1)
    run = load_pretrain_config(args.config)
    cfg, batch = run.model, run.train.batch_size
    with tempfile.TemporaryDirectory() as tmp:
        write_corpus(Path(tmp) / "corpus")
        corpus = open_corpus(Path(tmp) / "corpus")
        geo = {"patch_size": cfg.patch_size, "seq_patches": cfg.max_seq_len, "seed": 0}
        samplers = {"sequential s=0": WindowSampler(corpus, **geo),
                    f"sequential s={args.share}": AnyVariateSampler(corpus, multivariate_share=args.share, **geo),
                    "vectorised s=0": VectorisedSampler(corpus, **geo),
                    f"vectorised s={args.share}": AnyVariateVectorisedSampler(corpus, multivariate_share=args.share,
                                                                              **geo)}
        sample_times = {k: [] for k in samplers}
        uni = [samplers["sequential s=0"].next_batch(batch) for _ in range(args.steps)]
        multi = [samplers[f"sequential s={args.share}"].next_batch(batch) for _ in range(args.steps)]
        runs = {}  # name -> (model, optimizer, batches)
        for name, bias, batches in (("share 0", False, uni), (f"share {args.share}", False, multi),
                                    (f"share {args.share}, variate_bias", True, multi)):
            torch.manual_seed(0)
            model = MoiraiMoENetwork(dataclasses.replace(cfg, variate_bias=bias))
            runs[name] = (model, torch.optim.AdamW(model.parameters(), lr=1e-4), batches)
        step_times = {k: [] for k in runs}
        for _ in range(args.rounds):
            for name, s in samplers.items():
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    s.next_batch(batch)
                sample_times[name].append((time.perf_counter() - t0) / args.steps)
            for name, (model, opt, batches) in runs.items():
                t0 = time.perf_counter()
                for b in batches:
                    out = pretrain_loss(model, b["target"], b["sample_id"], variate_id=b.get("variate_id"))
                    opt.zero_grad()
                    out.loss.backward()
                    opt.step()
                step_times[name].append((time.perf_counter() - t0) / args.steps)
    for name, t in sample_times.items():
        print(f"batch of {batch} x {cfg.max_seq_len} patches, {name}: {statistics.median(t) * 1e3:.2f} ms")
    for name, t in step_times.items():
        print(f"training step, {name}: {statistics.median(t) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
