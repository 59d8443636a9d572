"""MSFT decoding with the KV cache (`MSFTNetwork.extend`, `msft_forecast(use_kv_cache=True)`) against re-encoding the
whole multi-scale sequence with `MSFTNetwork.forward` (docs/ARCHITECTURE.md §9)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from moe_ts.msft.model import MSFTModel
from moe_ts.msft.network import MSFTConfig

from tests.moe_ts.msft.test_msft import base_model, randomise


def msft_net(num_scales: int, gate: str = "linear", aggregator: bool = True) -> MSFTModel:
    net = MSFTModel.from_network(base_model(gate), MSFTConfig(num_scales=num_scales, lora_rank=4,
                                                             aggregator=aggregator))
    randomise(net)  # non-zero LoRA and aggregator maps: every path of the cached step matters
    return net.eval()


@pytest.mark.parametrize("num_scales,gate,aggregator", [(1, "linear", True), (2, "centroid", True),
                                                        (3, "linear", True), (2, "linear", False)])
def test_extend_token_by_token_equals_forward_on_every_prefix(num_scales, gate, aggregator):
    """The decoder's order: the context at once, then fine step t appends one token per scale i with 2^i | t.
    Every new token's hidden state equals what `forward` gives it on the whole prefix (padding in row 1)."""
    net = msft_net(num_scales, gate, aggregator)
    s, p, n0, steps = num_scales + 1, net.config.patch_size, 2 ** num_scales * 2, 11
    gen = torch.Generator().manual_seed(0)
    final = [(n0 + steps) // 2 ** i for i in range(s)]
    patches = [torch.randn(2, n, p, generator=gen) for n in final]
    real = [torch.ones(2, n, dtype=torch.bool) for n in final]
    for i in range(s):
        real[i][1, :max(1, 3 // 2 ** i)] = False  # row 1 left-padded: its first tokens are padding
        patches[i][1, :max(1, 3 // 2 ** i)] = 0.0
    cache = net.empty_cache(2, [n0 + steps // 2 ** i for i in range(s)])
    counts = [n0 // 2 ** i for i in range(s)]
    with torch.no_grad():
        got = net.extend([x[:, :c] for x, c in zip(patches, counts)], [r[:, :c] for r, c in zip(real, counts)], cache)
        ref, _ = net([x[:, :c] for x, c in zip(patches, counts)], [r[:, :c] for r, c in zip(real, counts)])
        for a, b in zip(got, ref):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        checked = 0
        for t in range(n0 + 1, n0 + steps):
            new = [i for i in range(s) if t % 2 ** i == 0]
            got = net.extend([x[:, c:c + (i in new)] for i, (x, c) in enumerate(zip(patches, counts))],
                             [r[:, c:c + (i in new)] for i, (r, c) in enumerate(zip(real, counts))], cache)
            counts = [c + (i in new) for i, c in enumerate(counts)]
            ref, _ = net([x[:, :c] for x, c in zip(patches, counts)], [r[:, :c] for r, c in zip(real, counts)])
            for i in new:
                torch.testing.assert_close(got[i][:, -1], ref[i][:, -1], rtol=1e-5, atol=1e-5)
                checked += 1
    assert checked >= steps - 1 + (num_scales > 0) * 4  # coarse tokens were appended too


@pytest.mark.parametrize("num_scales,gate", [(1, "linear"), (2, "centroid"), (3, "linear")])
@pytest.mark.parametrize("horizon", [9, 37])
def test_cached_forecast_equals_reencoding_with_the_same_draws(num_scales, gate, horizon):
    """Several scales, horizons over many patches (not whole coarse spans), a left-padded short series and NaNs."""
    net = msft_net(num_scales, gate)
    noisy = np.sin(np.arange(80) / 3.0) + np.random.default_rng(0).normal(size=80) * 0.3
    noisy[70:73] = np.nan
    contexts = [noisy, np.cos(np.arange(40) / 2.0) * 3 + 5]
    ref = net.forecast(contexts, horizon, num_samples=6, seed=3, context_length=64, use_kv_cache=False)
    got = net.forecast(contexts, horizon, num_samples=6, seed=3, context_length=64, use_kv_cache=True)
    assert got.samples.shape == (2, 6, horizon) and np.isfinite(got.samples).all()
    assert np.ptp(ref.samples, axis=1).min() > 0  # real draws, not a constant path
    np.testing.assert_allclose(got.samples, ref.samples, rtol=1e-5, atol=1e-5)
    other = net.forecast(contexts, horizon, num_samples=6, seed=4, context_length=64, use_kv_cache=True)
    assert not np.allclose(other.samples, ref.samples, atol=1e-3)  # the comparison is between draws that matter


def test_the_cache_is_the_default_and_never_re_encodes(monkeypatch):
    net = msft_net(2)
    calls = []
    forward = net.forward
    monkeypatch.setattr(net, "forward", lambda *a, **k: calls.append(1) or forward(*a, **k))
    contexts = [np.sin(np.arange(64) / 3.0)]
    default = net.forecast(contexts, 20, num_samples=4, seed=1, context_length=64)
    assert calls == []
    cached = net.forecast(contexts, 20, num_samples=4, seed=1, context_length=64, use_kv_cache=True)
    np.testing.assert_array_equal(default.samples, cached.samples)
    net.forecast(contexts, 20, num_samples=4, seed=1, context_length=64, use_kv_cache=False)
    assert len(calls) == 5  # one re-encoding per fine patch of the horizon (20 points / patch 4)


def test_extend_refuses_a_prefix_the_decoder_does_not_build():
    net = msft_net(1)
    cache = net.empty_cache(1, [8, 4])
    with pytest.raises(ValueError, match="scales 0 and 1 would hold 4 and 1 tokens: a prefix"):
        net.extend([torch.zeros(1, 4, 4), torch.zeros(1, 1, 4)],
                   [torch.ones(1, 4, dtype=torch.bool), torch.ones(1, 1, dtype=torch.bool)], cache)
    with pytest.raises(ValueError, match=r"the MSFT cache holds at most \[8, 4\] tokens per scale, \[9, 4\] asked"):
        net.extend([torch.zeros(1, 9, 4), torch.zeros(1, 4, 4)],
                   [torch.ones(1, 9, dtype=torch.bool), torch.ones(1, 4, dtype=torch.bool)], cache)
