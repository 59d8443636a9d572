"""An independent reference for the packed multi-patch NLL: explicit loops over rows, samples, positions and offsets,
one sample at a time through the network (used by the next-patch and long-horizon head tests)."""
from __future__ import annotations

import math

import torch

from moe_ts.model import MoiraiMoEModel
from moe_ts.packing import PackedLayout, masked_stats, patchify


def loop_nll(model: MoiraiMoEModel, head: torch.nn.Module, k_max: int, target: torch.Tensor,
             sample_id: torch.Tensor) -> float:
    """Mean NLL of `head` (predicting k_max patches per position) by loops over rows, samples, positions and
    offsets, one sample at a time through the network."""
    cfg = model.config
    P = cfg.patch_size
    total, count = 0.0, 0
    for b in range(target.shape[0]):
        for sid in sorted(set(sample_id[b].tolist()) - {0}):
            patches = (sample_id[b] == sid).nonzero().flatten()
            n = len(patches)
            window = target[b, patches[0] * P:(patches[-1] + 1) * P]
            values, observed = patchify(window[None], P)
            layout = PackedLayout.from_sample_id(torch.ones(1, n, dtype=torch.long))
            c = math.ceil(cfg.stats_ratio * n)
            loc, scale, informative = masked_stats(values, observed, layout.position < c, layout.sample_id,
                                                   cfg.min_scale)
            if not bool(informative.all()):
                continue
            normed = torch.where(observed, (values - loc) / scale, torch.zeros_like(values))
            hidden, _, _ = model(normed, layout.position, layout.attention_mask())
            params = head.distribution(hidden[0])  # [n, K·P]
            for j in range(n):
                for k in range(1, k_max + 1):
                    if j + k >= n or j + k < c:  # past the sample, or a statistics patch
                        continue
                    y = torch.zeros(n, k_max * P, dtype=values.dtype)
                    y[j, (k - 1) * P:k * P] = normed[0, j + k]
                    lp = params.log_prob(y)[j, (k - 1) * P:k * P]
                    obs = observed[0, j + k]
                    total -= float(lp[obs].sum().detach())
                    count += int(obs.sum())
    return total / max(count, 1)
