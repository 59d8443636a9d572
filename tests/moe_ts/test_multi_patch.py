"""Multi-patch prediction (`predict_patches` = K > 1) and the decode modes.

The loss is checked against a per-position loop written from the definition (position j of a sample
scores patches j+1..j+K that are neither statistics patches nor beyond the sample), the decoder's
K-token steps against the recompute path, and the decode modes against their definitions.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from moe_ts.config import ModelConfig, MoEConfig
from moe_ts.distributions import Mixture
from moe_ts.model import MoiraiMoEModel
from tests.moe_ts.nll_reference import loop_nll as head_loop_nll
from moe_ts.objectives import pretrain_loss

P = 8


def make_model(k: int) -> MoiraiMoEModel:
    torch.manual_seed(0)
    cfg = ModelConfig(patch_size=P, max_seq_len=24, d_model=32, num_layers=2, num_heads=4, predict_patches=k,
                      moe=MoEConfig(num_experts=4, top_k=2, d_ff=24))
    return MoiraiMoEModel(cfg).double().eval()


def loop_nll(model: MoiraiMoEModel, target: torch.Tensor, sample_id: torch.Tensor) -> float:
    """The next-patch head's NLL by explicit loops (tests/moe_ts/nll_reference.py)."""
    return head_loop_nll(model, model.head, model.config.predict_patches, target, sample_id)


@pytest.mark.parametrize("k", [1, 3])
def test_multi_patch_loss_equals_a_per_position_loop(k):
    model = make_model(k)
    rng = np.random.default_rng(0)
    target = torch.from_numpy(rng.normal(size=(2, 24 * P)) * 3 + 1)
    target[0, 50:70] = float("nan")
    target[1, 9 * P:10 * P] = 4.0  # a constant leading part: the second sample of row 1 is not informative
    sample_id = torch.tensor([[1] * 10 + [2] * 9 + [3] * 5,
                              [1] * 9 + [2] * 6 + [0] * 9])
    target[1, 9 * P:(9 + 2) * P] = 4.0
    with torch.no_grad():
        got = float(pretrain_loss(model, target, sample_id).nll)
    assert got == pytest.approx(loop_nll(model, target, sample_id), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("decode", ["sample", "median", "mean"])
def test_multi_patch_forecast_kv_cache_equals_recompute(decode):
    model = make_model(3)
    contexts = [np.sin(np.arange(70) / 3.0), np.cos(np.arange(45) / 2.0) * 5 + 1]
    contexts[0][[3, 10, 11]] = np.nan
    cached = model.forecast(contexts, 61, num_samples=5, seed=3, decode=decode)  # 8 patches: 3 steps of 3
    recomputed = model.forecast(contexts, 61, num_samples=5, seed=3, decode=decode, use_kv_cache=False)
    assert cached.samples.shape == (2, 5, 61)
    np.testing.assert_allclose(cached.samples, recomputed.samples, rtol=1e-9, atol=1e-9)


def test_median_decode_feeds_back_the_median_of_the_draws(monkeypatch):
    """Each step conditions on the per-point median of its draws: recorded fed-back patches must equal it."""
    model = make_model(1)
    from moe_ts import forecasting

    fed = []
    original = forecasting._Decoder.step

    def spy(self, patches_bkp):
        fed.append(patches_bkp.clone())
        return original(self, patches_bkp)

    monkeypatch.setattr(forecasting._Decoder, "step", spy)
    draws = []

    real_sample = Mixture.sample

    def sample_spy(self, sample_shape=()):
        out = real_sample(self, sample_shape)
        draws.append(out.clone())
        return out

    monkeypatch.setattr(Mixture, "sample", sample_spy)
    out = model.forecast([np.sin(np.arange(64) / 4.0)], 3 * P, num_samples=7, seed=0, decode="median")
    assert len(draws) == 3 and len(fed) == 2
    assert draws[0].shape[0] == forecasting.MEDIAN_DRAWS  # at least MEDIAN_DRAWS draws for the median
    for step in range(2):
        torch.testing.assert_close(fed[step][:, 0], draws[step].median(dim=0).values)
    # the returned samples are the first S draws of each step, on the original scale: same ordering
    z = draws[0][:7, 0].numpy().ravel()  # [S·P] normalised
    y = out.samples[0, :, :P].ravel()
    slope, intercept = np.polyfit(z, y, 1)  # an affine map of the draws (loc + scale·z), nothing else
    np.testing.assert_allclose(y, intercept + slope * z, atol=1e-4)


def test_unknown_decode_mode_is_an_error():
    with pytest.raises(ValueError, match="decode must be one of"):
        make_model(1).forecast([np.arange(40.0)], 8, decode="greedy")


def test_patches_per_step_one_feeds_back_the_leading_patch(monkeypatch):
    """A K=3 model decoded with patches_per_step=1: one patch per step, the leading P of the head's K·P."""
    model = make_model(3)
    from moe_ts import forecasting

    fed, means = [], []
    original_step = forecasting._Decoder.step
    original_distribution = model.head.distribution

    def step_spy(self, patches_bkp):
        fed.append(patches_bkp.clone())
        return original_step(self, patches_bkp)

    def distribution_spy(hidden):
        distr = original_distribution(hidden)
        means.append(distr.mean.clone())
        return distr

    monkeypatch.setattr(forecasting._Decoder, "step", step_spy)
    monkeypatch.setattr(model.head, "distribution", distribution_spy)
    out = model.forecast([np.sin(np.arange(64) / 4.0), np.arange(40.0)], 5 * P, num_samples=4, seed=0, decode="mean",
                         patches_per_step=1)
    assert out.samples.shape == (2, 4, 5 * P)
    assert len(means) == 5 and len(fed) == 4
    for step in range(4):
        assert fed[step].shape == (2, 1, P)
        assert means[step].shape == (2, 3 * P)
        torch.testing.assert_close(fed[step][:, 0], means[step][:, :P])


@pytest.mark.parametrize("per_step", [1, 2])
def test_patches_per_step_kv_cache_equals_recompute(per_step):
    model = make_model(3)
    contexts = [np.sin(np.arange(70) / 3.0), np.cos(np.arange(45) / 2.0) * 5 + 1]
    kwargs = dict(num_samples=5, seed=3, decode="sample", patches_per_step=per_step)
    cached = model.forecast(contexts, 61, **kwargs)
    recomputed = model.forecast(contexts, 61, use_kv_cache=False, **kwargs)
    assert cached.samples.shape == (2, 5, 61)
    np.testing.assert_allclose(cached.samples, recomputed.samples, rtol=1e-9, atol=1e-9)
    all_patches = model.forecast(contexts, 61, num_samples=5, seed=3, decode="sample")
    assert np.abs(cached.samples - all_patches.samples).max() > 1e-3  # a different decoding, not the default


def test_patches_per_step_default_is_all_predicted_patches():
    model = make_model(3)
    contexts = [np.sin(np.arange(70) / 3.0)]
    default = model.forecast(contexts, 40, num_samples=3, seed=1)
    explicit = model.forecast(contexts, 40, num_samples=3, seed=1, patches_per_step=3)
    np.testing.assert_array_equal(default.samples, explicit.samples)


@pytest.mark.parametrize("per_step", [0, 4])
def test_patches_per_step_outside_one_to_k_is_an_error(per_step):
    with pytest.raises(ValueError, match=r"patches_per_step must be in 1\.\.3"):
        make_model(3).forecast([np.arange(40.0)], 8, patches_per_step=per_step)
