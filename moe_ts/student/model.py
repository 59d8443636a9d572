"""The distilled MLP student (TimeDistill, arXiv 2502.15016; docs/ARCHITECTURE.md §8).

A point forecaster for cheap serving: the last `context_length` points of a series are normalised with
their own mean and scale (RevIN without affine parameters), split by a moving average into a trend and a
seasonal part (Autoformer's series decomposition), and each part goes through its own MLP
`context → hidden → horizon` (Linear, ReLU, Linear); the two outputs are added and de-normalised.
The student's "feature" (what feature distillation matches) is the sum of the two branches' hidden
pre-activations [B, W], as in the reference code's decomposed MLP.

Forecasts are POINT forecasts: `forecast` returns `ForecastOutput.from_point` (every quantile equals the
point, `samples` is None), so interval metrics (CRPS, MSIS) of a student are those of a point forecast.
`num_samples`, `seed` and the MoE model's decoding options (`moe_ts.decode_options.DecodeOptions`) are
accepted so that callers written for the MoE model work unchanged, and do not apply. A horizon longer
than the trained one is forecast by feeding the student's own forecast back as context (recursive rollout).

Missing values: a context shorter than `context_length` is left-padded with missing values; missing
values enter as 0 after normalising (the context mean), as the MoE model's default `zero_normalized`.

Shape legend: B series, L context length, H trained horizon, W hidden width.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Iterable, Literal

import numpy as np
import torch
import torch.nn.functional as F
from huggingface_hub import ModelCard, ModelHubMixin
from torch import Tensor, nn

from moe_ts.forecast_harness import check_request, context_arrays, forecast_batches
from moe_ts.forecast_output import DEFAULT_QUANTILES, ForecastOutput
from moe_ts.decode_options import accepted as accepted_decoding
from moe_ts.io.model_card import POINT_FORECASTER_CARD_TAIL
from moe_ts.io.hub import HubIOMixin, released_class_keywords
from moe_ts.packing import prepare_contexts
from moe_ts.typed_config import ConfigError

STUDENT_MODEL_TYPE = "timedistill_mlp"


@dataclass
class StudentConfig:
    """The MLP student: fixed context length and horizon, one hidden width for both branches."""

    model_type: Literal["timedistill_mlp"] = STUDENT_MODEL_TYPE  # what `moe_ts.io.loading` dispatches on
    context_length: int = 512
    horizon: int = 96
    hidden: int = 512
    moving_avg: int = 25  # odd kernel of the trend's moving average
    min_scale: float = 1e-5  # scale = sqrt(var + min_scale), as the MoE model's scaler

    def __post_init__(self) -> None:
        if self.context_length < 2:
            raise ConfigError(f"context_length must be >= 2, got {self.context_length}")
        if self.horizon < 1:
            raise ConfigError(f"horizon must be >= 1, got {self.horizon}")
        if self.hidden < 1:
            raise ConfigError(f"hidden must be >= 1, got {self.hidden}")
        if self.moving_avg < 1 or self.moving_avg % 2 == 0:
            raise ConfigError(f"moving_avg must be an odd number >= 1, got {self.moving_avg}")
        if self.min_scale <= 0:
            raise ConfigError(f"min_scale must be > 0, got {self.min_scale}")


STUDENT_CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name | default("moe-ts distilled MLP student", true) }}

An MLP point forecaster distilled from a moe-ts sparse mixture-of-experts model with TimeDistill
(arXiv 2502.15016): trend / seasonal decomposition of the normalised context, one MLP per part.

{{ architecture | default("", true) }}

## Intended use

Cheap point forecasts of univariate series at the trained horizon (longer horizons are rolled out by
feeding forecasts back). It produces no samples: its quantiles all equal the point forecast.

""" + POINT_FORECASTER_CARD_TAIL + """
## Limitations

- Point forecasts only; intervals (CRPS, MSIS) are those of a point forecast.
- A fixed context window: shorter series are padded with missing values, longer ones truncated.
- Trained on the data named above only: it is not a zero-shot model.
"""


def student_summary(model: "MLPForecaster") -> str:
    """One paragraph of sizes for the card."""
    cfg = model.config
    return (f"Context {cfg.context_length}, horizon {cfg.horizon}, hidden width {cfg.hidden}, moving average "
            f"{cfg.moving_avg}. Parameters: {model.num_parameters():,}.")


def moving_average(x_bl: Tensor, kernel: int) -> Tensor:
    """Centred moving average with the ends repeated (Autoformer's series decomposition) [B, L] -> [B, L]."""
    if kernel == 1:
        return x_bl
    pad = (kernel - 1) // 2
    padded = torch.cat((x_bl[:, :1].expand(-1, pad), x_bl, x_bl[:, -1:].expand(-1, pad)), dim=1)
    return F.avg_pool1d(padded[:, None], kernel_size=kernel, stride=1)[:, 0]


class _Branch(nn.Module):
    """Linear(L→W), ReLU, Linear(W→H); also returns the hidden pre-activation."""

    def __init__(self, context_length: int, hidden: int, horizon: int) -> None:
        super().__init__()
        self.inp = nn.Linear(context_length, hidden)
        self.out = nn.Linear(hidden, horizon)

    def forward(self, x_bl: Tensor) -> tuple[Tensor, Tensor]:
        h_bw = self.inp(x_bl)
        return self.out(torch.relu(h_bw)), h_bw


class MLPForecaster(
    nn.Module,
    HubIOMixin,
    ModelHubMixin,
    **released_class_keywords(StudentConfig, "distillation", "mlp", model_card_template=STUDENT_CARD_TEMPLATE),
):
    """Decomposed MLP point forecaster: `forward` on normalised contexts, `forecast` on raw series."""

    def __init__(self, config: StudentConfig) -> None:
        config = self.typed_config(config)
        super().__init__()
        self.config = config
        self.seasonal = _Branch(config.context_length, config.hidden, config.horizon)
        self.trend = _Branch(config.context_length, config.hidden, config.horizon)

    def num_parameters(self) -> int:
        """Number of weights."""
        return sum(p.numel() for p in self.parameters())

    def generate_model_card(self, *args: Any, **kwargs: Any):
        """The card template filled with this student's sizes (and `training`, `eval_table` when given)."""
        kwargs.setdefault("architecture", student_summary(self))
        card_data = copy.deepcopy(self._hub_mixin_info.model_card_data)
        for key in ("license", "datasets"):  # card metadata, as the MoE model's card
            value = kwargs.pop(key, None)
            if value:
                setattr(card_data, key, value)
        return ModelCard.from_template(card_data=card_data, template_str=self._hub_mixin_info.model_card_template,
                                       repo_url=self._hub_mixin_info.repo_url, **kwargs)

    def normalise(self, context_bl: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Raw contexts (NaN = missing) -> (normalised with missing as 0 [B, L], loc [B, 1], scale [B, 1]).

        Mean and Bessel-corrected variance of the observed values; scale = sqrt(var + min_scale).
        """
        observed = ~torch.isnan(context_bl)
        x = torch.where(observed, context_bl, torch.zeros_like(context_bl)).double()
        count = observed.sum(dim=1, keepdim=True).double()
        loc = x.sum(dim=1, keepdim=True) / count.clamp(min=1)
        sq = torch.where(observed, (x - loc) ** 2, torch.zeros_like(x)).sum(dim=1, keepdim=True)
        var = sq / (count - 1).clamp(min=1)
        scale = torch.sqrt(var + self.config.min_scale)
        normed = torch.where(observed, (x - loc) / scale, torch.zeros_like(x))
        dtype = self.seasonal.inp.weight.dtype
        return normed.to(dtype), loc.to(dtype), scale.to(dtype)

    def forward(self, normed_bl: Tensor) -> tuple[Tensor, Tensor]:
        """Normalised context [B, L] -> (normalised forecast [B, H], hidden feature [B, W])."""
        trend_bl = moving_average(normed_bl, self.config.moving_avg)
        season_bh, season_hid_bw = self.seasonal(normed_bl - trend_bl)
        trend_bh, trend_hid_bw = self.trend(trend_bl)
        return season_bh + trend_bh, season_hid_bw + trend_hid_bw

    def predict(self, context_bl: Tensor) -> Tensor:
        """Raw contexts of exactly `context_length` points (NaN = missing) -> forecasts [B, H] on their scale."""
        normed, loc, scale = self.normalise(context_bl)
        pred_bh, _ = self(normed)
        return loc + scale * pred_bh

    @torch.no_grad()
    def forecast(
        self,
        contexts: object,
        prediction_length: int,
        num_samples: int = 1,
        quantile_levels: Iterable[float] = DEFAULT_QUANTILES,
        seed: int | None = None,
        batch_size: int = 256,
        context_length: int | None = None,
        allow_short_context: bool = False,
        progress: bool = False,
        **decoding: Any,
    ) -> ForecastOutput:
        """Point forecasts of `prediction_length` steps (the MoE model's interface; see the module docstring).

        context_length: use at most this many recent points (at most the trained context_length; the rest of
        the window is padded as missing). A context shorter than the window is an error unless
        `allow_short_context` (then left-padded with missing values). num_samples and seed do not apply: the
        student is deterministic. decoding: the MoE model's `DecodeOptions` keywords (decode, patches_per_step,
        feedback_noise, use_kv_cache), checked as there and not used: the student forecasts directly.
        """
        accepted_decoding("MLPForecaster.forecast", decoding)  # a caller written for the MoE model passes them
        check_request(prediction_length, batch_size=batch_size)
        window = self._context_window(context_arrays(contexts), context_length, allow_short_context)
        param = next(self.parameters())
        return forecast_batches(
            self, window, lambda rows: self._rollout(torch.from_numpy(rows).to(param.device, param.dtype),
                                                     prediction_length),
            prediction_length, quantile_levels, batch_size=batch_size, progress=progress)

    def _context_window(self, arrays: list[np.ndarray], context_length: int | None,
                        allow_short_context: bool) -> np.ndarray:
        """[B, L] the last `context_length` points of each series, left-padded with NaN to the trained window."""
        trained = self.config.context_length
        used = trained if context_length is None else context_length
        if not 1 <= used <= trained:
            raise ValueError(f"context_length must be in 1..{trained} (the student's trained context), "
                             f"got {context_length}")
        window = np.full((len(arrays), trained), np.nan, dtype=np.float32)
        for i, arr in enumerate(prepare_contexts(arrays, used, used, allow_short_context, "the student's window")):
            window[i, trained - len(arr):] = arr
        return window

    def _rollout(self, ctx_bl: Tensor, prediction_length: int) -> Tensor:
        """[B, prediction_length]: one pass per trained horizon, each fed back as the newest context."""
        steps = []
        for _ in range(math.ceil(prediction_length / self.config.horizon)):
            pred_bh = self.predict(ctx_bl)
            steps.append(pred_bh)
            ctx_bl = torch.cat((ctx_bl, pred_bh), dim=1)[:, -self.config.context_length:]
        return torch.cat(steps, dim=1)[:, :prediction_length]
