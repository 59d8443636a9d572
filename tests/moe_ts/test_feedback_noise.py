"""Damped feedback of sample paths (`forecast(..., feedback_noise=τ)`, decode="sample").

Each path emits its draws and feeds back center + τ·(draw − center), the center being that of the mixture
component the draw came from. Checked against the definition: the component centers from the raw parameters,
the fed-back patches through a spy on the decoder, τ = 1 as plain ancestral sampling, the KV cache against
recompute, and the argument checks of the library and the CLI.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from moe_ts import forecasting
from moe_ts.config import ModelConfig, MoEConfig
from moe_ts.decode_options import DEFAULT_FEEDBACK_NOISE
from moe_ts.distributions import Mixture, MixtureParams
from moe_ts.model import MoiraiMoEModel

P = 8


def make_model() -> MoiraiMoEModel:
    torch.manual_seed(0)
    cfg = ModelConfig(patch_size=P, max_seq_len=24, d_model=32, num_layers=2, num_heads=4,
                      moe=MoEConfig(num_experts=4, top_k=2, d_ff=24))
    return MoiraiMoEModel(cfg).double().eval()


def one_component_mixture(component: int, n: int = 4000) -> tuple[Mixture, MixtureParams]:
    """A mixture whose weights put all mass on `component`, with distinct, known parameters per point."""
    g = torch.Generator().manual_seed(1)
    shape = (n,)
    logits = torch.full(shape + (4,), -1e4, dtype=torch.float64)
    logits[..., component] = 0.0
    params = MixtureParams(
        weights_logits=logits,
        t_df=torch.full(shape, 5.0, dtype=torch.float64),
        t_loc=torch.linspace(-2, 2, n, dtype=torch.float64),
        t_scale=torch.full(shape, 0.5, dtype=torch.float64),
        normal_loc=torch.linspace(3, 4, n, dtype=torch.float64),
        nb_total_count=torch.full(shape, 3.0, dtype=torch.float64),
        nb_logits=torch.rand(shape, generator=g, dtype=torch.float64),
        ln_loc=torch.linspace(-1, 1, n, dtype=torch.float64),
        ln_scale=torch.full(shape, 0.8, dtype=torch.float64),
    )
    return Mixture(params), params


@pytest.mark.parametrize("component", [0, 1, 2, 3])
def test_centers_are_each_components_central_value(component):
    mixture, p = one_component_mixture(component)
    expected = [p.t_loc, p.normal_loc, p.nb_total_count * torch.exp(p.nb_logits), torch.exp(p.ln_loc)][component]
    torch.manual_seed(5)
    draws, centers = mixture.sample_with_centers((3,))
    torch.testing.assert_close(centers, expected.expand(3, -1))
    torch.manual_seed(5)
    torch.testing.assert_close(mixture.sample((3,)), draws, rtol=0, atol=0)  # the same random stream as sample()
    if component in (0, 3):  # t location and log-normal median: half the draws fall below the center
        assert abs(float((draws < centers).double().mean()) - 0.5) < 0.02


def _spy_steps(monkeypatch) -> tuple[list, list]:
    fed, drawn = [], []
    original_step = forecasting._Decoder.step
    original_sample = Mixture.sample_with_centers

    def step_spy(self, patches_bkp):
        fed.append(patches_bkp.clone())
        return original_step(self, patches_bkp)

    def sample_spy(self, sample_shape=()):
        draws, centers = original_sample(self, sample_shape)
        drawn.append((draws.clone(), centers.clone()))
        return draws, centers

    monkeypatch.setattr(forecasting._Decoder, "step", step_spy)
    monkeypatch.setattr(Mixture, "sample_with_centers", sample_spy)
    return fed, drawn


@pytest.mark.parametrize("noise", [0.0, 0.3, 1.0])
def test_fed_back_patch_is_the_center_plus_the_damped_deviation(monkeypatch, noise):
    model = make_model()
    fed, drawn = _spy_steps(monkeypatch)
    contexts = [np.sin(np.arange(64) / 4.0) * 3, np.arange(40.0)]
    out = model.forecast(contexts, 4 * P, num_samples=5, seed=0, feedback_noise=noise)
    assert len(drawn) == 4 and len(fed) == 3
    for (draws, centers), patch in zip(drawn, fed):
        assert patch.shape == (2 * 5, 1, P)
        expected = draws if noise == 1.0 else centers + noise * (draws - centers)
        torch.testing.assert_close(patch[:, 0], expected, rtol=0, atol=1e-12)
        assert float((draws - centers).abs().max()) > 1e-3  # the draws are not their centers
    # the emitted samples are the draws themselves (affinely de-normalised), not the fed-back values
    z = drawn[1][0][:5].numpy().ravel()  # series 0, step 2
    y = out.samples[0, :, P:2 * P].ravel()
    slope, intercept = np.polyfit(z, y, 1)
    np.testing.assert_allclose(y, intercept + slope * z, atol=1e-6)


def test_damping_changes_the_paths_and_the_default_damps():
    model = make_model()
    contexts = [np.sin(np.arange(64) / 4.0) * 3]
    ancestral = model.forecast(contexts, 4 * P, num_samples=6, seed=2, feedback_noise=1.0).samples
    damped = model.forecast(contexts, 4 * P, num_samples=6, seed=2, feedback_noise=0.5).samples
    default = model.forecast(contexts, 4 * P, num_samples=6, seed=2).samples
    np.testing.assert_array_equal(ancestral[..., :P], damped[..., :P])  # the first step feeds nothing back yet
    assert np.abs(ancestral[..., P:] - damped[..., P:]).max() > 1e-3
    expected = model.forecast(contexts, 4 * P, num_samples=6, seed=2,
                              feedback_noise=DEFAULT_FEEDBACK_NOISE).samples
    np.testing.assert_array_equal(default, expected)


def test_damped_kv_cache_equals_recompute():
    model = make_model()
    contexts = [np.sin(np.arange(70) / 3.0), np.cos(np.arange(45) / 2.0) * 5 + 1]
    contexts[0][[3, 10, 11]] = np.nan
    cached = model.forecast(contexts, 61, num_samples=5, seed=3, feedback_noise=0.4)
    recomputed = model.forecast(contexts, 61, num_samples=5, seed=3, feedback_noise=0.4, use_kv_cache=False)
    np.testing.assert_allclose(cached.samples, recomputed.samples, rtol=1e-9, atol=1e-9)


def test_feedback_noise_arguments_are_checked():
    model = make_model()
    with pytest.raises(ValueError, match=r"feedback_noise must be in \[0, 1\]"):
        model.forecast([np.arange(40.0)], 8, feedback_noise=1.5)
    with pytest.raises(ValueError, match="feedback_noise applies to decode='sample', not 'median'"):
        model.forecast([np.arange(40.0)], 8, decode="median", feedback_noise=0.5)
