"""RevIN round trip and the statistics text prompt, against references computed here with numpy."""
import re

import numpy as np
import pytest
import torch

from moe_ts.timellm.prompt import input_statistics, statistics_prompt
from moe_ts.timellm.revin import RevIN


def test_revin_round_trips_a_series_with_trained_affine_values():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(5.0, 3.0, size=(3, 40)))
    revin = RevIN().double()
    with torch.no_grad():
        revin.weight.fill_(1.7)
        revin.bias.fill_(-0.4)
    y, mean, std = revin.normalise(x)
    torch.testing.assert_close(revin.denormalise(y, mean, std), x, rtol=0, atol=1e-12)
    # the normalised values are (x − mean) / sqrt(var + eps) · w + b with the population variance
    ref = (x.numpy() - x.numpy().mean(1, keepdims=True)) / np.sqrt(x.numpy().var(1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(y.detach().numpy(), ref * 1.7 - 0.4, rtol=0, atol=1e-12)


def test_revin_statistics_leave_missing_values_out():
    x = np.array([[1.0, np.nan, 3.0, 8.0, np.nan, -2.0]])
    mean, std = RevIN(eps=0.0).double().statistics(torch.from_numpy(x))
    assert float(mean) == pytest.approx(np.nanmean(x))
    assert float(std) == pytest.approx(np.nanstd(x))


def _reference(x: np.ndarray) -> dict:
    """Min, max, lower median, trend word and top-5 lags of the standardised series, computed directly."""
    z = (x - x.mean()) / np.sqrt(x.var() + 1e-5)
    n = len(z)
    acf = np.array([np.sum(z * np.roll(z, -k)) for k in range(n)])  # circular, by definition (no FFT)
    return {"min": z.min(), "max": z.max(), "median": np.sort(z)[(n - 1) // 2],
            "trend": "upward" if z[-1] - z[0] > 0 else "downward", "lags": set(np.argsort(-acf)[:5].tolist()),
            "z": z}


@pytest.mark.parametrize("slope", [0.01, -0.01])
def test_statistics_prompt_matches_hand_computed_values_on_a_sine(slope):
    t = np.arange(100)
    x = (np.sin(2 * np.pi * t / 20.5) + 0.3 * np.sin(2 * np.pi * t / 7.3) + slope * t).astype(np.float64)
    ref = _reference(x)
    revin = RevIN().double()
    mean, std = revin.statistics(torch.from_numpy(x)[None])
    stats = input_statistics(revin.standardise(torch.from_numpy(x)[None], mean, std))
    text = statistics_prompt("a sine", 24, 100, stats, 0)
    assert f"min value {ref['min']:.4f}," in text
    assert f"max value {ref['max']:.4f}," in text
    assert f"median value {ref['median']:.4f}," in text
    assert f"the trend of input is {ref['trend']}," in text
    assert "forecast the next 24 steps given the previous 100 steps" in text
    lags = [int(v) for v in re.search(r"top 5 lags are : \[([^\]]*)\]", text).group(1).split(",")]
    assert lags[0] == 0 and set(lags) == ref["lags"]  # a circular ACF is symmetric: k and n−k tie, so compare sets
    assert len(ref["lags"] - {0}) == 4 and ref["lags"] != {0, 1, 2, 3, 4}  # the sine's period, not just small lags


def test_statistics_of_a_left_padded_context_are_those_of_its_observed_points():
    """eval and forecast left-pad short series with missing values: the prompt states the series' own min, max,
    median and trend (not the padding's zeros); the lags are the zero-filled context's."""
    t = np.arange(30)
    x = 2.0 + np.sin(2 * np.pi * t / 7.0) + 0.05 * t  # standardised: its median is far from 0
    padded = np.concatenate([np.full(18, np.nan), x])
    revin = RevIN().double()
    xt = torch.from_numpy(padded)[None]
    z = revin.standardise(xt, *revin.statistics(xt))
    stats = input_statistics(z, ~torch.isnan(xt))
    z_obs = (x - x.mean()) / np.sqrt(x.var() + 1e-5)
    assert float(stats.minimum[0]) == pytest.approx(z_obs.min())
    assert float(stats.maximum[0]) == pytest.approx(z_obs.max())
    assert float(stats.median[0]) == pytest.approx(np.sort(z_obs)[(len(z_obs) - 1) // 2])
    assert float(stats.trend[0]) == pytest.approx(z_obs[-1] - z_obs[0])
    filled = np.concatenate([np.zeros(18), z_obs])
    acf = np.array([np.sum(filled * np.roll(filled, -k)) for k in range(len(filled))])
    assert set(stats.lags[0].tolist()) == set(np.argsort(-acf)[:5].tolist())
    nothing = input_statistics(torch.zeros(1, 8, dtype=torch.float64), torch.zeros(1, 8, dtype=torch.bool))
    assert all(float(v[0]) == 0.0 for v in (nothing.minimum, nothing.maximum, nothing.median, nothing.trend))
