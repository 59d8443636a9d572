"""Reversible instance normalisation (RevIN, Kim et al. 2022; Time-LLM's `layers/StandardNorm.py`).

Each series (one channel of one window: channel-independent) is standardised with its own mean and population
standard deviation, sqrt(var + eps), then scaled by a trainable affine pair; `denormalise` undoes both. One affine
pair is shared by every series: the model forecasts any univariate series, so there is no channel to index a
per-channel pair by. Missing values (NaN) are left out of the statistics and enter as 0 before the affine map.

Shape legend: B series, L points.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


class RevIN(nn.Module):
    """x → (x − mean) / std · weight + bias, and back."""

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(1))
        self.bias = nn.Parameter(torch.zeros(1))

    def statistics(self, x_bl: Tensor) -> tuple[Tensor, Tensor]:
        """(mean [B, 1], std [B, 1]) of each row's observed values (population variance, as RevIN)."""
        observed = ~torch.isnan(x_bl)
        filled = torch.where(observed, x_bl, torch.zeros_like(x_bl))
        count = observed.sum(dim=1, keepdim=True).clamp(min=1).to(x_bl.dtype)
        mean = filled.sum(dim=1, keepdim=True) / count
        var = torch.where(observed, (x_bl - mean) ** 2, torch.zeros_like(x_bl)).sum(dim=1, keepdim=True) / count
        return mean, torch.sqrt(var + self.eps)

    def standardise(self, x_bl: Tensor, mean_b1: Tensor, std_b1: Tensor) -> Tensor:
        """(x − mean) / std with missing values as 0 (no affine map)."""
        z = (x_bl - mean_b1) / std_b1
        return torch.where(torch.isnan(z), torch.zeros_like(z), z)

    def affine(self, z_bl: Tensor) -> Tensor:
        return z_bl * self.weight + self.bias

    def normalise(self, x_bl: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(normalised [B, L], mean [B, 1], std [B, 1])."""
        mean, std = self.statistics(x_bl)
        return self.affine(self.standardise(x_bl, mean, std)), mean, std

    def denormalise(self, y_bh: Tensor, mean_b1: Tensor, std_b1: Tensor) -> Tensor:
        """The inverse of `normalise` for outputs on the normalised scale [B, H]."""
        return (y_bh - self.bias.to(y_bh.dtype)) / self.weight.to(y_bh.dtype) * std_b1 + mean_b1
