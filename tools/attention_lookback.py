"""Where the last context patch looks: attention of a trained model by lag, on cycles of known period (issue 23).

    python tools/attention_lookback.py --checkpoint RUN/final [--context 1024] [--series 16] [--json OUT.json]
        [--rollout]   # also: the median rollout's error per forecast patch, against Seasonal Naive's

For each input kind (clean sines of period 24 / 48 / 96 / 168, the daily-profile probe, ETTh1 validation
windows), one forward pass over `--context` points (standardised with the whole context's mean and sd, as
`forecast` does) records every head's attention weights (softmax(q·k/√d) over the allowed keys, recomputed
from the q, k that `scaled_dot_product_attention` receives). The query is the last context patch, which
predicts the first forecast patch; the keys that hold that patch one period earlier are at lags
period/P - 1, 2·period/P - 1, ... (P = patch size; only whole-patch multiples count). Printed per layer and
head: the attention share at lags 0-11, the share at the period-aligned lags, and that share relative to a
head that spreads evenly over the same keys (1 = no preference for the period). With `--rollout`, the
series are extended by two periods (at least 3 patches), forecast with `decode="median"`, and each forecast
patch's MAE is printed over the mean seasonal difference of the context (MASE-like; Seasonal Naive beside it),
with the forecast's standard deviation within the patch over the truth's (below 1: the cycle flattens).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from moe_ts.model import MoiraiMoEModel

SHOW_LAGS = 12


@contextmanager
def recording_attention(store: list[torch.Tensor]) -> Iterator[None]:
    """Within the block every scaled_dot_product_attention call also appends its weights [B, H, N, L]."""
    original = F.scaled_dot_product_attention

    def wrapped(q, k, v, attn_mask=None, **kwargs):
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        if attn_mask is not None:
            scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else scores + attn_mask
        store.append(torch.softmax(scores, dim=-1).detach())
        return original(q, k, v, attn_mask=attn_mask, **kwargs)

    F.scaled_dot_product_attention = wrapped
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


def inputs(kind: str, context: int, n: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """[n, context] series of a kind and its period."""
    t = np.arange(context, dtype=np.float64)
    if kind.startswith("sine_p"):
        p = int(kind[6:])
        return np.stack([3 * np.sin(2 * np.pi * t / p + rng.uniform(0, 2 * np.pi)) + rng.normal(0, 0.1, context)
                         for _ in range(n)]), p
    if kind == "profile_p24":
        from eval.probes import _profile

        return np.stack([_profile(((t + rng.integers(0, 24)) % 24) / 24) + rng.normal(0, 0.1, context)
                         for _ in range(n)]), 24
    if kind == "etth1_val":
        from data_prep import registry

        series = registry.load_series("etth1")
        lo, hi = registry.lsf_val_span("etth1", len(series[0]))
        starts = np.linspace(lo, hi - 48, max(1, n // len(series))).round().astype(int)
        rows = [np.asarray(s.target[st - context:st], np.float64) for s in series for st in starts]
        return np.stack(rows[:n]), 24
    raise ValueError(f"unknown input kind {kind!r}")


def lag_profile(model: MoiraiMoEModel, values: np.ndarray) -> np.ndarray:
    """[layers, heads, N] mean attention of the last patch by lag (0 = itself)."""
    cfg = model.config
    b, length = values.shape
    n = length // cfg.patch_size
    x = values[:, -n * cfg.patch_size:]
    x = (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, ddof=1, keepdims=True) + cfg.min_scale)
    patches = torch.tensor(x, dtype=torch.float32).reshape(b, n, cfg.patch_size)
    positions = torch.arange(n).expand(b, n)
    mask = torch.ones(n, n, dtype=torch.bool).tril().expand(b, n, n)
    store: list[torch.Tensor] = []
    with torch.no_grad(), recording_attention(store):
        model(patches, positions, mask)
    last = torch.stack([w[:, :, -1, :] for w in store]).mean(1)  # [layers, heads, keys]
    return last.flip(-1).numpy()  # index = lag


def aligned_lags(period: int, patch: int, n: int) -> list[int]:
    """Lags from the last patch to the patches exactly k periods before the first forecast patch."""
    out, k = [], 1
    while k * period <= (n - 1) * patch:
        if (k * period) % patch == 0:
            out.append(k * period // patch - 1)
        k += 1
    return out


def rollout_errors(model: MoiraiMoEModel, values: np.ndarray, period: int, horizon: int) -> dict[str, list[float]]:
    """Per forecast patch: the median rollout's and Seasonal Naive's MAE / the context's seasonal scale, and the
    forecast's within-patch sd over the truth's. `values` [n, context + horizon]."""
    patch = model.config.patch_size
    ctx, truth = values[:, :-horizon], values[:, -horizon:]
    with torch.no_grad():
        median = np.asarray(model.forecast(list(ctx), horizon, num_samples=20, decode="median", seed=0).median)
    snaive = np.stack([np.tile(c[-period:], horizon // period + 1)[:horizon] for c in ctx])
    scale = np.mean([np.abs(c[period:] - c[:-period]).mean() for c in ctx])
    out: dict[str, list[float]] = {"model": [], "seasonal_naive": [], "sd_ratio": []}
    for i in range(horizon // patch):
        cut = slice(i * patch, (i + 1) * patch)
        out["model"].append(float(np.abs(median[:, cut] - truth[:, cut]).mean() / scale))
        out["seasonal_naive"].append(float(np.abs(snaive[:, cut] - truth[:, cut]).mean() / scale))
        out["sd_ratio"].append(float(median[:, cut].std(1).mean() / truth[:, cut].std(1).mean()))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--context", type=int, default=1024)
    p.add_argument("--series", type=int, default=16)
    p.add_argument("--kinds", default="sine_p24,sine_p48,sine_p96,sine_p168,profile_p24,etth1_val")
    p.add_argument("--json", type=Path)
    p.add_argument("--rollout", action="store_true", help="also score the median rollout per forecast patch")
    args = p.parse_args(argv)
    model = MoiraiMoEModel.from_pretrained(args.checkpoint).eval()
    patch = model.config.patch_size
    report = {}
    for kind in args.kinds.split(","):
        values, period = inputs(kind, args.context, args.series, np.random.default_rng(0))
        prof = lag_profile(model, values)
        n = prof.shape[-1]
        lags = aligned_lags(period, patch, n)
        print(f"\n{kind}: period {period} = {period / patch:g} patches; aligned lags {lags[:6]}{'...' if len(lags) > 6 else ''}")
        print("layer head | " + " ".join(f"{lag:>5d}" for lag in range(SHOW_LAGS)) + " | aligned  ×even")
        rows = []
        for layer in range(prof.shape[0]):
            for head in range(prof.shape[1]):
                w = prof[layer, head]
                share = float(w[lags].sum()) if lags else float("nan")
                ratio = share / (len(lags) / n) if lags else float("nan")
                print(f"{layer:>5d} {head:>4d} | " + " ".join(f"{v:5.2f}" for v in w[:SHOW_LAGS])
                      + f" | {share:7.3f} {ratio:6.2f}")
                rows.append({"layer": layer, "head": head, "by_lag": w.tolist(), "aligned_share": share,
                             "aligned_vs_even": ratio})
        report[kind] = {"period": period, "aligned_lags": lags, "heads": rows}
        if args.rollout:
            horizon = max(3 * patch, -(-2 * period // patch) * patch)
            longer, _ = inputs(kind, args.context + horizon, args.series, np.random.default_rng(0))
            errors = rollout_errors(model, longer, period, horizon)
            for key, vals in errors.items():
                print(f"rollout {key:>14s} by patch: " + " ".join(f"{v:5.2f}" for v in vals))
            report[kind]["rollout"] = errors
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
