"""Forecasting and the pretraining objective score the same predictions.

For a window of n patches, pretraining (`moe_ts.objectives.pretrain_loss`) standardises with the leading ⌈stats_ratio·n⌉ = c patches and
scores patch c with the prediction made at position c-1. Forecasting from exactly those c patches uses
the same statistics and positions, so its first predictive distribution must give the same NLL for
the true patch c; feeding the true patch c back must then reproduce the training prediction of patch
c+1. A decoder whose positions do not advance, or whose statistics or cache differ from training,
fails here.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from moe_ts.config import ModelConfig, MoEConfig
from moe_ts.forecasting import prepare_decoder
from moe_ts.model import MoiraiMoEModel
from moe_ts.objectives import pretrain_loss

P = 8
N = 10  # patches in the training window


@pytest.fixture(scope="module")
def model() -> MoiraiMoEModel:
    torch.manual_seed(0)
    cfg = ModelConfig(patch_size=P, max_seq_len=16, d_model=32, num_layers=2, num_heads=4,
                      moe=MoEConfig(num_experts=4, top_k=2, d_ff=24))
    return MoiraiMoEModel(cfg).double().eval()


def training_nll(model: MoiraiMoEModel, window: np.ndarray, scored_upto: int) -> float:
    """Pretraining NLL of `window` with every patch after `scored_upto` hidden (NaN)."""
    target = torch.from_numpy(window.copy())[None]
    target[:, (scored_upto + 1) * P:] = float("nan")
    with torch.no_grad():
        return float(pretrain_loss(model, target, torch.ones(1, N, dtype=torch.long)).nll)


@pytest.mark.parametrize("use_cache", [True, False])
def test_first_two_forecast_steps_equal_the_training_predictions(model, use_cache):
    rng = np.random.default_rng(1)
    t = np.arange(N * P)
    window = (5 + 2 * np.sin(2 * np.pi * t / 12) + 0.3 * rng.standard_normal(N * P)).astype(np.float64)
    c = math.ceil(model.config.stats_ratio * N)
    nll_c = training_nll(model, window, c)  # only patch c scored
    nll_c1 = 2 * training_nll(model, window, c + 1) - nll_c  # patches c and c+1 scored, equal weights

    decoder, loc, scale = prepare_decoder(model, [window[:c * P]], use_cache)
    assert decoder.tokens.dtype == torch.float64
    truth = (torch.from_numpy(window).view(N, P) - loc[0, -1]) / scale[0, -1]  # [N, P] normalised
    with torch.no_grad():
        h1 = decoder.prefill()
        step1_nll = -float(model.head.distribution(h1).log_prob(truth[c][None]).mean())
        h2 = decoder.step(truth[c][None, None])
        step2_nll = -float(model.head.distribution(h2).log_prob(truth[c + 1][None]).mean())
    assert step1_nll == pytest.approx(nll_c, abs=1e-6)
    assert step2_nll == pytest.approx(nll_c1, abs=1e-6)
    # The two steps predict different patches: equal values would hide a decoder that does not advance.
    assert abs(step1_nll - step2_nll) > 1e-3
