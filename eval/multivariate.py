"""The LSF multivariate mode (`moe-ts eval --suite lsf --lsf-mode multivariate`, eval/protocols.py `lsf_tasks`):
the model forecasts every channel of a window as one any-variate group (`forecast_group`), the baselines stay
per channel, and every channel is scored as in the per-channel mode.

Shape legend: n instances (a multiple of the group size C), S sample paths, H horizon.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from moe_ts.forecast_output import ForecastOutput

# forecast() keywords a group forecast takes; those it ignores (a group is one batch, left-padded to whole patches);
# the others are refused unless at their default (they do not apply to groups)
GROUP_KEYWORDS = ("decode", "feedback_noise", "use_kv_cache")
IGNORED = ("batch_size", "allow_short_context", "progress")
DEFAULTS = {"patches_per_step": None, "head": "next"}


class GroupForecaster:
    """A model that has `forecast_group`, seen through the runner's `forecast`: consecutive runs of `group_size`
    contexts (one window, every channel) are forecast jointly."""

    def __init__(self, model: Any, group_size: int) -> None:
        if not hasattr(model, "forecast_group"):
            raise ValueError("the multivariate LSF mode needs a Moirai-MoE model (it forecasts a window's channels "
                             "as one group)")
        self.model = model
        self.group_size = group_size

    def forecast(self, contexts: Sequence[np.ndarray], prediction_length: int, num_samples: int = 100,
                 quantile_levels: Sequence[float] = (), seed: int | None = None, **kwargs: Any) -> ForecastOutput:
        """Samples [n, S, H] of n contexts, n a multiple of the group size; each group draws from its own stream,
        seeded from `seed` and its place in the chunk."""
        refused = sorted(k for k, v in kwargs.items() if k in DEFAULTS and v != DEFAULTS[k])
        unknown = sorted(k for k in kwargs if k not in GROUP_KEYWORDS + IGNORED and k not in DEFAULTS)
        if refused or unknown:
            raise ValueError(f"the multivariate LSF mode decodes groups: {', '.join(refused + unknown)} does not apply")
        if len(contexts) % self.group_size:
            raise ValueError(f"{len(contexts)} contexts are not whole groups of {self.group_size} channels")
        decoding = {k: v for k, v in kwargs.items() if k in GROUP_KEYWORDS}
        groups = len(contexts) // self.group_size
        seeds = [None] * groups if seed is None else np.random.default_rng(seed).integers(2**31, size=groups).tolist()
        parts = []
        for g in range(groups):
            out = self.model.forecast_group(list(contexts[g * self.group_size:(g + 1) * self.group_size]),
                                            prediction_length, num_samples=num_samples,
                                            quantile_levels=quantile_levels, seed=seeds[g], **decoding)
            parts.append(out.samples)
        return ForecastOutput.from_samples(np.concatenate(parts, axis=0), tuple(float(q) for q in quantile_levels))
