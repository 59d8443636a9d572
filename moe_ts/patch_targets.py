"""Targets of the packed multi-patch objective (docs/ARCHITECTURE.md §2, "Objective"): what position j is scored on.

Position j of a packed row predicts patches j+1..j+K of its own sample. `shifted_targets` lays those patches out
beside each position, with the weight of every value: 1 for an observed value of a scored patch (same sample,
not a statistics patch, informative sample), 0 otherwise and past the row's end. `masked_nll` is the mean NLL per
scored value. Both heads use them: the next-patch head (K = predict_patches) and the long-horizon head
(K = horizon_patches).

Shape legend: B batch, N patches, P patch size, K patches predicted per position, Q = K·P.
"""
from __future__ import annotations

import torch
from torch import Tensor


def shifted_targets(normed_bnp: Tensor, observed_bnp: Tensor, sample_id_bn: Tensor, stats_bn: Tensor,
                    informative_bn: Tensor, patches: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """(targets, weights), both [B, N-1, K·P]: patch j+1, ..., patch j+K of position j and their weights."""
    targets, weights = [], []
    n = normed_bnp.shape[1]
    for k in range(1, patches + 1):
        same = (sample_id_bn[:, k:] == sample_id_bn[:, :-k]) & (sample_id_bn[:, k:] > 0)
        scored_bn = same & ~stats_bn[:, k:] & informative_bn[:, k:]
        weight_bnp = (observed_bnp[:, k:] & scored_bn[..., None]).to(dtype)
        pad = n - 1 - weight_bnp.shape[1]  # positions whose patch j+k lies past the row
        targets.append(torch.nn.functional.pad(normed_bnp[:, k:], (0, 0, 0, pad)))
        weights.append(torch.nn.functional.pad(weight_bnp, (0, 0, 0, pad)))
    return torch.cat(targets, dim=-1), torch.cat(weights, dim=-1)


def masked_nll(log_prob_bnq: Tensor, weight_bnq: Tensor) -> Tensor:
    """Mean negative log-likelihood over the values of weight 1 (0 when there are none)."""
    return -(log_prob_bnq * weight_bnq).sum() / weight_bnq.sum().clamp(min=1.0)
