"""Any-variate groups with covariates (issue 27): the packed row, KV-cache group decoding against re-encoding,
and what known and past-only covariates can and cannot reach."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from moe_ts.attention import Attention, LayerCache
from moe_ts.config import ModelConfig, MoEConfig
from moe_ts.covariates import GroupCovariates, check_covariates, pack_group_row
from moe_ts.decode_options import DecodeOptions
from moe_ts.group_decoding import GroupDecoder, decode_group, forecast_group
from moe_ts.model import MoiraiMoEModel

P = 8
RNG = np.random.default_rng(0)
T, H = 5 * P + 3, 3 * P
TARGETS = np.stack([np.sin(np.arange(T) / 3.0) * 4 + 1, np.cos(np.arange(T) / 5.0) * 2]).astype(np.float32)
KNOWN = (np.arange(T + H) % 7 == 0).astype(np.float32) * 3 + RNG.normal(0, 0.1, T + H).astype(np.float32)
PAST = RNG.normal(0, 1, T).astype(np.float32)


def make_model(variate_bias: bool = True, **overrides) -> MoiraiMoEModel:
    torch.manual_seed(0)
    cfg = ModelConfig(patch_size=P, max_seq_len=48, d_model=32, num_layers=2, num_heads=4, variate_bias=variate_bias,
                      moe=MoEConfig(num_experts=4, top_k=2, d_ff=24), **overrides)
    model = MoiraiMoEModel(cfg).double().eval()
    if variate_bias:  # random biases, so that a variate mix-up shows
        with torch.no_grad():
            for layer in model.layers:
                layer.attn.var_bias.weight.normal_(0, 1.0)
    return model


def test_the_row_holds_every_variate_and_the_known_horizon():
    """Hand-written layout for 1 target, 1 known and 1 past-only covariate (context of 2 patches + 3 points)."""
    t, h = 2 * P + 3, 2 * P
    target = np.arange(t, dtype=np.float32)
    known = np.arange(t + h, dtype=np.float32) * 10
    past = -np.arange(t, dtype=np.float32)
    row = pack_group_row(target[None], check_covariates({"p": past}, {"k": known}, t, h), P, 2, "position")
    assert row.variate[0].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 1, 1]
    assert row.time[0].tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2, 3, 4]
    assert row.target_last_tokens().tolist() == [[2]]
    # left padding: the first patch holds P-3 missing values, then the first 3 points of each variate
    assert row.observed[0, 0].tolist() == [False] * (P - 3) + [True] * 3
    assert row.values[0, 3, -1].item() == known[2] and row.values[0, 6, -1].item() == past[2]
    # the known covariate's horizon patches follow the context, right after its last context value
    assert row.values[0, 9].tolist() == known[t:t + P].tolist()
    assert row.values[0, 10].tolist() == known[t + P:t + 2 * P].tolist()
    assert bool(row.stats_use.all())  # the known covariate's statistics include its horizon values (uni2ts)


def test_known_covariate_without_horizon_values_is_a_one_line_error_naming_it():
    with pytest.raises(ValueError, match=r"^known covariate 'temp': no values for the horizon") as err:
        check_covariates(None, {"temp": np.ones(T)}, T, H)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"known covariate 'temp': no values for the horizon \(all"):
        check_covariates(None, {"temp": np.r_[np.ones(T), np.full(H, np.nan)]}, T, H)
    with pytest.raises(ValueError, match=r"past covariate 'load': 51 values, the target has 43"):
        check_covariates({"load": np.ones(T + P)}, None, T, H)
    with pytest.raises(ValueError, match="both as past-only and as known"):
        check_covariates({"a": np.ones(T)}, {"a": np.ones(T + H)}, T, H)


@torch.no_grad()
def test_cached_group_steps_match_reencoding_with_the_variate_bias():
    """The decoder's hidden states, step by step, with and without the KV cache (variate bias on, covariates in)."""
    model = make_model()
    covariates = check_covariates({"p": PAST}, {"k": KNOWN}, T, H)
    row = pack_group_row(TARGETS, covariates, P, 3, "position")
    normed = torch.nan_to_num(row.values).double()
    cached = GroupDecoder(model, row, normed, use_cache=True, horizon_patches=3)
    recompute = GroupDecoder(model, row, normed, use_cache=False, horizon_patches=3)
    torch.testing.assert_close(cached.prefill(), recompute.prefill(), rtol=0, atol=1e-10)
    cached.expand(2)
    recompute.expand(2)
    for patch in torch.randn(2, 2, 2, P, dtype=torch.float64):
        torch.testing.assert_close(cached.step(patch), recompute.step(patch), rtol=0, atol=1e-10)
    assert cached.caches[0].length == 4 * 6 + 2 * 3  # 4 variates x 6 context patches, 2 steps of 2 targets + 1 known


def test_a_cached_attention_layer_biases_new_queries_against_cached_keys_by_variate():
    """Attention alone: prefill 5 tokens, then 2 more through the cache = one pass over all 7 (variate bias on)."""
    torch.manual_seed(1)
    attn = Attention(16, 2, 10000.0, 1e-6, variate_bias=True).double()
    with torch.no_grad():
        attn.var_bias.weight.copy_(torch.tensor([[-2.0, 1.0], [3.0, 0.5]]))
    x = torch.randn(1, 7, 16, dtype=torch.float64)
    time = torch.tensor([[0, 1, 0, 1, 2, 2, 3]])
    variate = torch.tensor([[0, 0, 1, 1, 1, 0, 1]])
    full_mask = time[:, None, :] <= time[:, :, None]
    full, _ = attn(x, time, full_mask, variate_bn=variate)
    cache = LayerCache.empty(1, 2, 7, 8, torch.float64, "cpu")
    attn(x[:, :5], time[:, :5], full_mask[:, :5, :5], cache, variate_bn=variate[:, :5])
    step, _ = attn(x[:, 5:], time[:, 5:], full_mask[:, 5:, :], cache, variate_bn=variate[:, 5:])
    torch.testing.assert_close(step, full[:, 5:], rtol=0, atol=1e-12)
    assert cache.key_variates().tolist() == variate.tolist()
    # the cached keys' variate ids are used: with the cache's ids swapped, the step changes
    cache2 = LayerCache.empty(1, 2, 7, 8, torch.float64, "cpu")
    attn(x[:, :5], time[:, :5], full_mask[:, :5, :5], cache2, variate_bn=1 - variate[:, :5])
    swapped, _ = attn(x[:, 5:], time[:, 5:], full_mask[:, 5:, :], cache2, variate_bn=variate[:, 5:])
    assert (swapped - step).abs().max() > 1e-3


@pytest.mark.parametrize("decode", ["sample", "median"])
def test_kv_cache_group_decoding_equals_reencoding_with_the_same_draws(decode):
    model = make_model()
    kwargs = dict(num_samples=5, seed=3, decode=decode, past_covariates={"p": PAST}, known_covariates={"k": KNOWN})
    cached = forecast_group(model, TARGETS, H, use_kv_cache=True, **kwargs)
    again = forecast_group(model, TARGETS, H, use_kv_cache=False, **kwargs)
    assert cached.samples.shape == (2, 5, H)
    np.testing.assert_allclose(cached.samples, again.samples, rtol=0, atol=1e-5)
    assert np.isfinite(cached.samples).all() and cached.samples.std(axis=1).mean() > 0


def _first_patch_and_rest(out) -> tuple[np.ndarray, np.ndarray]:
    return out.samples[..., :P], out.samples[..., P:]


def test_a_known_covariates_future_values_change_the_forecast_after_their_time():
    """Reordering the known covariate's horizon values (same statistics) leaves the first forecast patch as it
    was (a target patch of time t sees covariates up to time t) and changes the later ones."""
    model = make_model()
    shuffled = KNOWN.copy()
    shuffled[T:] = KNOWN[T:][::-1]
    base = model.forecast_group(TARGETS, H, num_samples=4, seed=0, known_covariates={"k": KNOWN})
    other = model.forecast_group(TARGETS, H, num_samples=4, seed=0, known_covariates={"k": shuffled})
    np.testing.assert_allclose(_first_patch_and_rest(base)[0], _first_patch_and_rest(other)[0], rtol=0, atol=1e-9)
    assert np.abs(_first_patch_and_rest(base)[1] - _first_patch_and_rest(other)[1]).max() > 1e-4


def test_a_past_only_covariate_reaches_the_forecast_from_the_context_only():
    """Its context values change the forecast; it has no horizon tokens, so a row built from any future of it is
    the same row (the perturbation cannot reach the forecast)."""
    model = make_model()
    base = model.forecast_group(TARGETS, H, num_samples=4, seed=0, past_covariates={"p": PAST})
    moved = model.forecast_group(TARGETS, H, num_samples=4, seed=0, past_covariates={"p": PAST[::-1].copy()})
    assert np.abs(base.samples - moved.samples).max() > 1e-4
    without = model.forecast_group(TARGETS, H, num_samples=4, seed=0)
    assert np.abs(base.samples - without.samples).max() > 1e-4
    row = pack_group_row(TARGETS, GroupCovariates({"p": PAST}, {}), P, 3, "position")
    assert row.values.shape[1] == 3 * 6  # 3 variates x 6 context patches, no horizon token


@pytest.mark.parametrize("variate_bias", [True, False])
def test_forecast_with_covariates_decodes_each_series_with_its_own(variate_bias):
    """The univariate API: series 1 with its covariates equals that series forecast alone with them (its own
    random stream through forecast_group's seed is not asked: compare the one-series call), and covariates
    change the forecast of a model with and without the variate bias (they enter attention either way)."""
    model = make_model(variate_bias)
    series = [TARGETS[0], TARGETS[1][3:]]
    past = {"p": [PAST, PAST[3:]]}
    known = {"k": [KNOWN, KNOWN[3:]]}
    both = model.forecast(series, H, num_samples=3, seed=0, past_covariates=past, known_covariates=known)
    assert both.samples.shape == (2, 3, H)
    alone = model.forecast([series[0]], H, num_samples=3, seed=0, past_covariates={"p": [PAST]},
                           known_covariates={"k": KNOWN})
    np.testing.assert_allclose(both.samples[0], alone.samples[0], rtol=0, atol=1e-9)
    plain = model.forecast_group(series[0][None], H, num_samples=3, seed=0)
    assert np.abs(plain.samples[0] - alone.samples[0]).max() > 1e-4
    with pytest.raises(ValueError, match=r"known covariate 'k' \(series 1\): 62 values, needs 64"):
        model.forecast(series, H, num_samples=3, known_covariates={"k": [KNOWN, KNOWN[5:]]})


def test_uni2ts_decoding_takes_covariates_and_needs_the_variate_bias():
    model = make_model(time_ids="observed")
    out = model.forecast_group(TARGETS, H, num_samples=3, seed=0, decode="uni2ts", past_covariates={"p": PAST},
                               known_covariates={"k": KNOWN})
    assert out.samples.shape == (2, 3, H) and np.isfinite(out.samples).all()
    with pytest.raises(ValueError, match="no variate attention bias"):
        decode_group(make_model(False), TARGETS, None, 2, 2, DecodeOptions("uni2ts"))


def test_forecast_with_covariates_refuses_what_does_not_apply_in_one_line():
    model = make_model()
    with pytest.raises(ValueError, match="patches_per_step does not apply"):
        model.forecast([TARGETS[0]], H, past_covariates={"p": PAST}, patches_per_step=2)
    with pytest.raises(ValueError, match="head='horizon' does not apply"):
        model.forecast([TARGETS[0]], H, past_covariates={"p": PAST}, head="horizon")
    with pytest.raises(ValueError, match=r"past covariate 'p': values for 1 series, the context has 2"):
        model.forecast(list(TARGETS), H, past_covariates={"p": [PAST]})
