"""tools/attention_lookback.py (issue 23 diagnosis): the recorded attention weights are the ones the model used,
and the period-aligned lags are the keys one, two, ... periods before the first forecast patch."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

_spec = importlib.util.spec_from_file_location(
    "attention_lookback", Path(__file__).resolve().parents[2] / "tools" / "attention_lookback.py")
lookback = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lookback)


def test_aligned_lags_are_whole_patch_multiples_of_the_period():
    # period 48 = 3 patches of 16: the patch predicted from the last one (lag 0) repeats the patches at lags 2, 5, ...
    assert lookback.aligned_lags(48, 16, 10) == [2, 5, 8]
    # period 24 = 1.5 patches: only every second period ends on a patch boundary
    assert lookback.aligned_lags(24, 16, 10) == [2, 5, 8]
    assert lookback.aligned_lags(96, 16, 20) == [5, 11, 17]
    assert lookback.aligned_lags(168, 16, 64) == [20, 41, 62]


def test_recorded_weights_reproduce_the_attention_output():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 5, 4), torch.randn(2, 3, 5, 4)
    mask = torch.ones(5, 5, dtype=torch.bool).tril().expand(2, 1, 5, 5)
    store: list[torch.Tensor] = []
    with lookback.recording_attention(store):
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert F.scaled_dot_product_attention is not None and len(store) == 1
    w = store[0]
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3, 5))
    assert float(w[..., 0, 1:].abs().max()) == 0.0  # causal: the first query sees only itself
    torch.testing.assert_close(w @ v, out, rtol=1e-5, atol=1e-6)


def test_lag_profile_of_a_model_is_a_distribution_per_head(tiny_model):
    model = tiny_model(0).eval()
    cfg = model.config
    values = np.sin(np.arange(4, dtype=np.float64)[:, None] + np.arange(8 * cfg.patch_size) / 3.0)
    prof = lookback.lag_profile(model, values)
    assert prof.shape == (cfg.num_layers, cfg.num_heads, 8)
    np.testing.assert_allclose(prof.sum(-1), 1.0, rtol=1e-5)
