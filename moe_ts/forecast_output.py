"""The result of a probabilistic forecast, shared by the model, the baselines and the evaluation."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_QUANTILES: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass
class ForecastOutput:
    """Forecasts for B series over H steps.

    samples:   [B, S, H] sample paths, or None for point forecasters (baselines)
    mean:      [B, H]
    quantiles: [B, Q, H] at `quantile_levels`
    """

    mean: np.ndarray
    quantiles: np.ndarray
    quantile_levels: tuple[float, ...] = DEFAULT_QUANTILES
    samples: np.ndarray | None = None

    @property
    def median(self) -> np.ndarray:
        """[B, H] the 0.5 quantile (computed from samples when 0.5 is not among the levels)."""
        if 0.5 in self.quantile_levels:
            return self.quantiles[:, self.quantile_levels.index(0.5)]
        if self.samples is not None:
            return np.median(self.samples, axis=1)
        raise ValueError("median needs the 0.5 quantile level or samples")

    @classmethod
    def from_samples(cls, samples: np.ndarray, quantile_levels: tuple[float, ...] = DEFAULT_QUANTILES) -> "ForecastOutput":
        """Build from sample paths [B, S, H]."""
        q = np.quantile(samples, quantile_levels, axis=1).transpose(1, 0, 2)
        return cls(mean=samples.mean(axis=1), quantiles=q, quantile_levels=tuple(quantile_levels), samples=samples)

    @classmethod
    def from_point(cls, point: np.ndarray, quantile_levels: tuple[float, ...] = DEFAULT_QUANTILES) -> "ForecastOutput":
        """A point forecast [B, H]: every quantile equals the point."""
        q = np.repeat(point[:, None, :], len(quantile_levels), axis=1)
        return cls(mean=point, quantiles=q, quantile_levels=tuple(quantile_levels), samples=None)
