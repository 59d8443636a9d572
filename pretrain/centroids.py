"""From a pretrained model to a centroid-gated MoE model (docs/ARCHITECTURE.md §9).

    moe-ts centroids --checkpoint PRETRAINED --data CORPUS --out DIR [--num-windows N]
        [--num-experts E] [--top-k K] [--select nearest|farthest] [--iters I] [--batch-size B]
        [--seed S] [--overwrite]

Runs PRETRAINED (a dense model, i.e. one expert per layer, or an MoE model with any gate) over N
packed windows of the model's context length drawn from CORPUS as pretraining draws them, collects
per layer the states entering the FFN (real, observed patches only), fits k-means (k-means++ seeding,
mini-batch updates, torch, on the GPU when there is one) with k = the number of experts, and writes
DIR: a centroid-gated Hugging Face folder (`moe-ts pretrain --init DIR` continues from it) plus
`centroids.json` (per-layer cluster sizes, k-means inertia, which source expert each expert copies).
Weights are copied as `moe_ts.centroids.transfer_to_centroid_model` documents. `nearest` is the
default selection; `farthest` exists only to reproduce released uni2ts Moirai-MoE checkpoints
(uni2ts issue #211).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

from moe_ts.centroids import collect_ffn_inputs, kmeans, transfer_to_centroid_model
from moe_ts.config import ModelConfig
from moe_ts.device import DEVICE_HELP, resolve_device
from moe_ts.typed_config import ConfigError
from moe_ts.io.output_dir import check_output_dir
from moe_ts.io.provenance import card_fields, derived_records, record_files

ROWS_PER_BATCH = 32
REPORT_FILE = "centroids.json"


def centroid_config(source: ModelConfig, num_experts: int | None, top_k: int | None, select: str,
                    where: str) -> ModelConfig:
    """The target's config: the source's, with a centroid gate over `num_experts` experts."""
    src_e = source.moe.num_experts
    if num_experts is None:
        if src_e == 1:
            raise ConfigError(f"{where}: has no MoE layers (1 expert per layer); pass --num-experts E to upcycle its "
                              "FFN into E centroid-gated experts")
        num_experts = src_e
    if src_e not in (1, num_experts):
        raise ConfigError(f"{where}: has {src_e} experts per layer; --num-experts must be {src_e} (or the source "
                          "must be dense) so that every expert starts from a trained one")
    if top_k is None:
        top_k = source.moe.top_k if src_e > 1 else min(2, num_experts)
    moe = dataclasses.replace(source.moe, gate="centroid", centroid_select=select, num_experts=num_experts,
                              top_k=top_k)
    return dataclasses.replace(source, moe=moe)


def fit_layer_centroids(states: list[torch.Tensor], num_experts: int, iters: int, batch_size: int,
                        seed: int, device: str | torch.device = "auto") -> tuple[list[torch.Tensor], list[dict]]:
    """k-means per layer on `device` (auto: the GPU when present); the centroids (CPU) and per-layer cluster
    statistics."""
    device = resolve_device(device)
    centroids, stats = [], []
    for i, x_td in enumerate(states):
        if x_td.shape[0] < num_experts:
            raise ValueError(f"layer {i}: only {x_td.shape[0]} real tokens collected for {num_experts} clusters; "
                             "raise --num-windows")
        x = x_td.to(device)
        c = kmeans(x, num_experts, iters=iters, batch_size=batch_size, seed=seed + i)
        dist_te = torch.cdist(x.float(), c)
        assign = dist_te.argmin(1)
        sizes = torch.bincount(assign, minlength=num_experts).tolist()
        inertia = float(dist_te.min(1).values.pow(2).mean())
        centroids.append(c.cpu())
        stats.append({"layer": i, "tokens": int(x.shape[0]), "cluster_sizes": sizes, "mean_sq_distance": inertia})
    return centroids, stats


def build(checkpoint: str, corpus_path: str, out: Path, *, num_windows: int = 256, num_experts: int | None = None,
          top_k: int | None = None, select: str = "nearest", iters: int = 100, batch_size: int = 4096, seed: int = 0,
          overwrite: bool = False, device: str | torch.device = "auto") -> dict:
    """The whole command; returns the report written to DIR/centroids.json."""
    from moe_ts.model import MoiraiMoEModel
    from data_prep.corpus import check_manifest, open_corpus
    from pretrain.data import WindowSampler

    if num_windows < 1:
        raise ValueError(f"--num-windows must be >= 1, got {num_windows}")
    if Path(out).resolve() == Path(checkpoint).resolve():
        raise ValueError(f"--out {out}: is the --checkpoint folder; the pretrained model would be replaced")
    inputs = {"--checkpoint": checkpoint, "--data": corpus_path}
    check_output_dir(out, overwrite, kind="centroids", inputs=inputs)
    t0 = time.time()
    device = resolve_device(device)
    source = MoiraiMoEModel.from_pretrained(checkpoint, device=device)
    cfg = centroid_config(source.config, num_experts, top_k, select, checkpoint)
    corpus = open_corpus(corpus_path)
    check_manifest(corpus_path)
    sampler = WindowSampler(corpus, patch_size=cfg.patch_size, seq_patches=cfg.max_seq_len, seed=seed)
    sizes = [ROWS_PER_BATCH] * (num_windows // ROWS_PER_BATCH) + ([num_windows % ROWS_PER_BATCH] if num_windows % ROWS_PER_BATCH else [])
    batches = ({k: v.to(device) for k, v in sampler.next_batch(n).items()} for n in sizes)
    states = collect_ffn_inputs(source, batches, max_tokens=num_windows * cfg.max_seq_len)
    source.to("cpu")  # the weight transfer runs on the CPU, beside the new model
    centroids, stats = fit_layer_centroids(states, cfg.moe.num_experts, iters, batch_size, seed, device)
    torch.manual_seed(seed)
    target = MoiraiMoEModel(cfg)
    mapping = transfer_to_centroid_model(source, target, centroids, states)
    for layer_stats, perm in zip(stats, mapping):
        layer_stats["source_expert"] = perm
    report = {"source": str(checkpoint), "corpus": str(corpus_path), "num_windows": num_windows,
              "num_experts": cfg.moe.num_experts, "top_k": cfg.moe.top_k, "select": select, "iters": iters,
              "batch_size": batch_size, "seed": seed,
              "experts_from": "dense FFN copies" if source.config.moe.num_experts == 1 else "matched source experts",
              "layers": stats, "seconds": round(time.time() - t0, 2)}
    records = derived_records(checkpoint, {REPORT_FILE: report})  # a converted source's credit travels on
    target.save_pretrained(out, overwrite=overwrite, folder_kind="centroids", inputs=inputs,
                           extra_files=record_files(records), remedy="pass --overwrite to replace it",
                           model_card_kwargs={"model_name": Path(out).name, **card_fields(records)})
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="moe-ts centroids", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="pretrained Hugging Face folder (dense or MoE)")
    p.add_argument("--data", required=True, help="corpus folder written by `moe-ts prepare`")
    p.add_argument("--out", required=True, type=Path, help="folder for the centroid-gated model")
    p.add_argument("--num-windows", type=int, default=256, help="packed context-length windows to run (default 256)")
    p.add_argument("--num-experts", type=int, help="experts per layer (default: the source's; required for a dense source)")
    p.add_argument("--top-k", type=int, help="experts per token (default: the source's, 2 for a dense source)")
    p.add_argument("--select", choices=("nearest", "farthest"), default="nearest",
                   help="nearest centroids (default); farthest only reproduces released uni2ts checkpoints")
    p.add_argument("--iters", type=int, default=100, help="k-means iterations (default 100)")
    p.add_argument("--batch-size", type=int, default=4096, help="k-means mini-batch size (default 4096)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out whatever it holds (a user's files, a moe-ts folder of another kind)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP + " (the collection forward pass and k-means)")
    args = p.parse_args(argv)
    report = build(args.checkpoint, args.data, args.out, num_windows=args.num_windows, num_experts=args.num_experts,
                   top_k=args.top_k, select=args.select, iters=args.iters, batch_size=args.batch_size,
                   seed=args.seed, overwrite=args.overwrite, device=args.device)
    for layer in report["layers"]:
        print(f"layer {layer['layer']}: {layer['tokens']} tokens, cluster sizes {layer['cluster_sizes']}, "
              f"mean squared distance {layer['mean_sq_distance']:.4f}, experts from {layer['source_expert']}")
    print(f"centroids: wrote {args.out} ({report['num_experts']} experts, top-{report['top_k']}, {args.select}) "
          f"in {report['seconds']:.1f} s; continue with `moe-ts pretrain --init {args.out}`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
