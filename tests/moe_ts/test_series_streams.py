"""Per-series random streams in the decode loop: inside `independent_series()` a seeded forecast draws each
series from its own generator while the series still decode as one batch, so a series' sample paths do not
depend on the other series or the batch size (up to the last bit of batched float arithmetic), for every decode
mode that draws; outside it, nothing changes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import moe_ts.forecasting as forecasting
from moe_ts.distributions import RowStreams, row_streams
from moe_ts.forecast_harness import independent_series


def contexts(count: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        y = 20 + 5 * np.sin(np.arange(96) * 2 * np.pi / (6 + i)) + rng.normal(0, 1 + i, 96)
        y[rng.random(96) < 0.05] = np.nan
        out.append(y.astype(np.float32))
    return out


@pytest.mark.parametrize("decode", ["sample", "median", "mean"])
def test_a_series_draws_the_same_paths_in_any_batch_and_company(tiny_model, decode):
    model = tiny_model().eval()
    series = contexts()
    kw = dict(num_samples=6, seed=3, decode=decode)
    with independent_series():
        alone = model.forecast(series[2:3], 12, **kw).samples[0]
        for others, batch_size in ((series, 5), (series, 2), (series[::-1], 3), ([series[2]] + contexts(4, 9), 5)):
            out = model.forecast(others, 12, batch_size=batch_size, **kw)
            index = next(i for i, s in enumerate(others) if s is series[2])
            # the same draws; the network's batched float arithmetic may differ in the last bit
            np.testing.assert_allclose(out.samples[index], alone, rtol=1e-5, atol=1e-5)
        assert not np.array_equal(model.forecast(series[2:3], 12, **{**kw, "seed": 4}).samples[0], alone)
    batched = model.forecast(series, 12, batch_size=5, **kw).samples[2]  # the shared stream: other draws
    assert not np.allclose(batched, alone, rtol=1e-3)


def test_independent_series_keep_their_batches(tiny_model, monkeypatch):
    model = tiny_model().eval()
    calls = []
    real = forecasting._sample_paths

    def spy(model_, arrays, *args, **kwargs):
        calls.append(len(arrays))
        return real(model_, arrays, *args, **kwargs)

    monkeypatch.setattr(forecasting, "_sample_paths", spy)
    with independent_series():
        model.forecast(contexts(), 8, num_samples=4, seed=0, batch_size=4)
    assert calls == [4, 1]  # two batches, not five forecasts of one series


def test_row_streams_draw_each_series_block_from_its_own_generator():
    gens = [torch.Generator().manual_seed(s) for s in (11, 12)]
    like = torch.zeros(())
    with row_streams(RowStreams(gens, per_series=3)):
        from moe_ts.distributions import _poisson, _rand, _randn, _standard_gamma

        z = _randn(torch.Size([2, 6, 4]), like, row_dim=1)
        u = _rand(torch.Size([6, 4]), like, row_dim=0)
        g = _standard_gamma(torch.full((6, 4), 2.0), row_dim=0)
        k = _poisson(torch.full((6, 4), 3.0), row_dim=0)
    expect = [torch.Generator().manual_seed(s) for s in (11, 12)]
    for b, gen in enumerate(expect):  # block b of each draw, in draw order, from generator b alone
        rows = slice(3 * b, 3 * b + 3)
        torch.testing.assert_close(z[:, rows], torch.randn(2, 3, 4, generator=gen), rtol=0, atol=0)
        torch.testing.assert_close(u[rows], torch.rand(3, 4, generator=gen), rtol=0, atol=0)
        torch.testing.assert_close(g[rows], torch._standard_gamma(torch.full((3, 4), 2.0), generator=gen), rtol=0, atol=0)
        torch.testing.assert_close(k[rows], torch.poisson(torch.full((3, 4), 3.0), generator=gen), rtol=0, atol=0)
    with pytest.raises(ValueError, match="7 rows for 2 series of 3"):
        with row_streams(RowStreams(gens, per_series=3)):
            _randn(torch.Size([7]), like, row_dim=0)
