"""Model behaviour: causality, leading-share statistics, packing, MoE dispatch, KV cache, sizes."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from moe_ts.config import ModelConfig, MoEConfig, load_model_config
from moe_ts.model import MoiraiMoEModel
from kernels.topk import route_reference
from moe_ts.dispatch import set_moe_dispatcher
from moe_ts.moe import MoELayer
from moe_ts.objectives import pretrain_loss
from moe_ts.packing import PackedLayout, masked_stats, patchify

P = 8


def layer_test_config(**moe_overrides) -> ModelConfig:
    moe = MoEConfig(num_experts=5, top_k=2, d_ff=24, **moe_overrides)
    return ModelConfig(patch_size=P, max_seq_len=16, d_model=32, num_layers=2, num_heads=4, moe=moe)


@pytest.fixture()
def model() -> MoiraiMoEModel:
    torch.manual_seed(0)
    return MoiraiMoEModel(layer_test_config()).eval()


def hidden_of(model: MoiraiMoEModel, target: torch.Tensor, sample_id: torch.Tensor) -> torch.Tensor:
    values, observed = patchify(target, P)
    layout = PackedLayout.from_sample_id(sample_id)
    normed = torch.where(observed, values, torch.zeros_like(values))
    hidden, _, _ = model(normed, layout.position, layout.attention_mask())
    return hidden


def test_changing_future_patches_leaves_earlier_outputs_unchanged(model):
    n = 10
    target = torch.randn(2, n * P)
    sid = torch.ones(2, n, dtype=torch.long)
    before = hidden_of(model, target, sid)
    changed = target.clone()
    changed[:, 6 * P:] = torch.randn(2, 4 * P) * 10
    after = hidden_of(model, changed, sid)
    torch.testing.assert_close(before[:, :6], after[:, :6])
    assert not torch.allclose(before[:, 6:], after[:, 6:])


def test_packed_samples_do_not_see_each_other(model):
    a, b = torch.randn(1, 4 * P), torch.randn(1, 6 * P)
    packed = torch.cat([a, b], dim=1)
    sid = torch.tensor([[1] * 4 + [2] * 6])
    h_packed = hidden_of(model, packed, sid)
    h_a = hidden_of(model, a, torch.ones(1, 4, dtype=torch.long))
    h_b = hidden_of(model, b, torch.ones(1, 6, dtype=torch.long))
    torch.testing.assert_close(h_packed[:, :4], h_a, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h_packed[:, 4:], h_b, atol=1e-5, rtol=1e-5)


def test_statistics_come_only_from_the_leading_share():
    n, ratio = 10, 0.3  # ⌈0.3·10⌉ = 3 leading patches
    target = torch.randn(1, n * P)
    sid = torch.ones(1, n, dtype=torch.long)
    layout = PackedLayout.from_sample_id(sid)
    lead = layout.stats_patches(ratio)
    assert lead.sum().item() == 3 and lead[0, :3].all()

    def stats(t):
        values, observed = patchify(t, P)
        return masked_stats(values, observed, lead, sid, 1e-5)

    loc, scale, informative = stats(target)
    assert informative.all()
    lead_values = target[0, : 3 * P].double()
    torch.testing.assert_close(loc[0, 0, 0].double(), lead_values.mean(), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(scale[0, 0, 0].double(), (lead_values.var() + 1e-5).sqrt(), atol=1e-6, rtol=1e-6)
    later = target.clone()
    later[:, 3 * P:] += 100.0
    loc2, scale2, _ = stats(later)
    torch.testing.assert_close(loc, loc2)
    torch.testing.assert_close(scale, scale2)
    earlier = target.clone()
    earlier[:, :P] += 100.0
    loc3, _, _ = stats(earlier)
    assert not torch.allclose(loc, loc3)


def test_leading_patches_get_no_loss(model):
    """The loss must not change when only the statistics patches' predictions could change it."""
    n = 10
    target = torch.randn(1, n * P)
    sid = torch.ones(1, n, dtype=torch.long)
    base = pretrain_loss(model, target, sid).nll
    # Patch 1 and 2 are statistics patches (⌈0.3·10⌉ = 3): their own NLL is not scored, but their values
    # also feed the statistics, so instead drop the loss-bearing values and check the NLL becomes 0.
    masked = target.clone()
    masked[:, 3 * P:] = float("nan")
    assert pretrain_loss(model, masked, sid).nll.item() == 0.0
    assert base.item() != 0.0


def test_samples_with_degenerate_statistics_get_no_loss(model):
    """A constant (or < 2 observed values) leading part would normalise later values by the scale floor."""
    n = 10
    varied = torch.randn(1, n * P)
    flat_lead = torch.randn(1, n * P)
    flat_lead[:, : 3 * P] = 5.0  # ⌈0.3·10⌉ = 3 statistics patches, all equal
    sid = torch.ones(1, n, dtype=torch.long)
    assert pretrain_loss(model, flat_lead, sid).nll.item() == 0.0
    assert pretrain_loss(model, varied, sid).nll.item() > 0.0
    packed = torch.cat([varied[:, : 5 * P], flat_lead[:, : 5 * P]], dim=1)
    both = pretrain_loss(model, packed, torch.tensor([[1] * 5 + [2] * 5]))
    alone = pretrain_loss(model, varied[:, : 5 * P], torch.ones(1, 5, dtype=torch.long))
    torch.testing.assert_close(both.nll, alone.nll, atol=1e-5, rtol=1e-5)  # only the informative sample counts


@pytest.mark.parametrize("case", ["constant", "all_missing", "mostly_missing"])
def test_no_nan_on_degenerate_series(model, case):
    n = 8
    target = torch.full((2, n * P), 3.0)
    if case == "all_missing":
        target[0] = float("nan")
    if case == "mostly_missing":
        target[:, : 6 * P] = float("nan")
    out = pretrain_loss(model, target, torch.ones(2, n, dtype=torch.long))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_dropless_moe_equals_per_token_loop():
    torch.manual_seed(1)
    cfg = MoEConfig(num_experts=6, top_k=3, d_ff=16)
    layer = MoELayer(12, cfg)
    x = torch.randn(37, 12)
    y, stats = layer(x)
    routing = route_reference(layer.gate.scores(x), cfg.top_k, cfg.weighting)
    ids, weights = routing.expert_ids, routing.weights
    expected = torch.stack([
        sum(weights[t, j] * layer.experts.single(x[t:t + 1], int(ids[t, j]))[0] for j in range(cfg.top_k))
        for t in range(x.shape[0])
    ])
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=1e-5)
    assert stats.counts.sum().item() == 37 * 3


def test_one_expert_moe_equals_dense_swiglu():
    torch.manual_seed(2)
    layer = MoELayer(10, MoEConfig(num_experts=1, top_k=1, d_ff=14))
    x = torch.randn(9, 10)
    y, _ = layer(x)
    e = layer.experts
    dense = (torch.nn.functional.silu(x @ e.w_gate[0]) * (x @ e.w_up[0])) @ e.w_down[0]
    torch.testing.assert_close(y, dense)


def test_centroid_gate_nearest_and_farthest():
    torch.manual_seed(3)
    x = torch.randn(20, 8)
    near = MoELayer(8, MoEConfig(num_experts=4, top_k=1, d_ff=8, gate="centroid"))
    far = MoELayer(8, MoEConfig(num_experts=4, top_k=1, d_ff=8, gate="centroid", centroid_select="farthest"))
    centroids = torch.randn(4, 8)
    near.gate.set_centroids(centroids)
    far.gate.set_centroids(centroids)
    dist = torch.cdist(x, centroids)
    assert torch.equal(near.route(x).expert_ids[:, 0], dist.argmin(1))
    assert torch.equal(far.route(x).expert_ids[:, 0], dist.argmax(1))
    _, stats = near(x)
    assert stats.aux_loss.item() == 0.0  # fixed centroids: no load-balancing loss
    with pytest.raises(ValueError, match="centroids must have shape"):
        near.gate.set_centroids(torch.randn(3, 8))


def test_forecast_with_kv_cache_equals_recompute(model):
    contexts = [np.sin(np.arange(50) / 3.0), np.cos(np.arange(29) / 2.0) * 5 + 1]
    contexts[0][[3, 10, 11]] = np.nan
    cached = model.forecast(contexts, 21, num_samples=7, seed=11)
    recomputed = model.forecast(contexts, 21, num_samples=7, seed=11, use_kv_cache=False)
    assert cached.samples.shape == (2, 7, 21)
    np.testing.assert_allclose(cached.samples, recomputed.samples, rtol=1e-4, atol=1e-4)


def test_forecast_outputs_and_inputs(model):
    series = pd.Series(np.arange(40, dtype=float) + np.random.default_rng(0).normal(size=40))
    out = model.forecast([series, np.arange(100.0)], 10, num_samples=30, seed=0)
    assert out.samples.shape == (2, 30, 10) and out.mean.shape == (2, 10)
    assert out.quantiles.shape == (2, 9, 10)
    assert np.all(np.diff(out.quantiles, axis=1) >= 0)
    assert np.isfinite(out.samples).all()
    # seeded forecasts repeat; different seeds differ
    again = model.forecast([series, np.arange(100.0)], 10, num_samples=30, seed=0)
    np.testing.assert_array_equal(out.samples, again.samples)
    other = model.forecast([series, np.arange(100.0)], 10, num_samples=30, seed=1)
    assert not np.array_equal(out.samples, other.samples)
    # a constant context forecasts finite values
    flat = model.forecast([np.full(32, 7.0)], 5, num_samples=4, seed=0)
    assert np.isfinite(flat.samples).all()


def test_forecast_bad_input(model):
    with pytest.raises(ValueError, match="prediction_length must be > 0"):
        model.forecast([np.arange(32.0)], 0)
    with pytest.raises(ValueError, match=r"series 1: context has no observed value"):
        model.forecast([np.arange(32.0), np.full(32, np.nan)], 4)
    with pytest.raises(ValueError, match=r"series 0: context has 5 points, shorter than one patch \(8\)"):
        model.forecast([np.arange(5.0)], 4)
    out = model.forecast([np.arange(5.0)], 4, num_samples=3, allow_short_context=True)
    assert out.samples.shape == (1, 3, 4)
    with pytest.raises(ValueError, match="no context series given"):
        model.forecast([], 4)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        model.forecast([np.arange(32.0)], 4, batch_size=0)
    with pytest.raises(ValueError, match=r"context_length must be in 1\.\.128"):
        model.forecast([np.arange(32.0)], 4, context_length=0)
    with pytest.raises(ValueError, match=r"context_length must be in 1\.\.128"):
        model.forecast([np.arange(32.0)], 4, context_length=129)


def test_forecast_accepts_a_dataframe_and_restores_the_global_rng(model):
    frame = pd.DataFrame({"a": np.sin(np.arange(40.0)), "b": np.arange(40.0)})
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    out = model.forecast(frame, 6, num_samples=4, seed=0)
    assert torch.equal(torch.rand(1), expected_next)  # the caller's random stream is untouched
    by_list = model.forecast([frame["a"].to_numpy(), frame["b"].to_numpy()], 6, num_samples=4, seed=0)
    np.testing.assert_array_equal(out.samples, by_list.samples)


def test_save_load_gives_identical_outputs(model, tmp_path):
    model.save_pretrained(tmp_path / "ckpt")
    assert {"config.json", "model.safetensors", "README.md"} <= {p.name for p in (tmp_path / "ckpt").iterdir()}
    loaded = MoiraiMoEModel.from_pretrained(tmp_path / "ckpt")
    assert loaded.config == model.config
    ctx = [np.sin(np.arange(40) / 4.0)]
    np.testing.assert_array_equal(
        model.forecast(ctx, 12, num_samples=5, seed=3).samples, loaded.forecast(ctx, 12, num_samples=5, seed=3).samples
    )


@pytest.mark.parametrize(
    "name, total, active", [("small", 117e6, 11e6), ("base", 935e6, 86e6)]
)
def test_parameter_counts_match_design(name, total, active):
    cfg = load_model_config(f"configs/{name}.yaml")
    with torch.device("meta"):  # base has ~935M parameters: count them without allocating
        model = MoiraiMoEModel(cfg)
    assert abs(model.num_parameters() / total - 1) < 0.03
    assert abs(model.num_parameters(active=True) / active - 1) < 0.03


def test_config_errors_name_the_key(tmp_path):
    from moe_ts.typed_config import ConfigError

    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  d_model: 32\n  num_heads: 4\n  moe:\n    top_kk: 2\n")
    with pytest.raises(ConfigError, match=r"model\.moe\.top_kk"):
        load_model_config(bad)
    with pytest.raises(ConfigError, match="top_k must be in"):
        dataclasses.replace(MoEConfig(), top_k=40)


def test_model_loss_same_with_triton_backend(model):
    """The whole model gives the same loss and every parameter's gradient (router and gates included) through
    the Triton routing, permute and un-permute kernels."""
    other = MoiraiMoEModel(model.config)
    other.load_state_dict(model.state_dict())
    assert set_moe_dispatcher(other, "triton") == model.config.num_layers
    target = torch.randn(2, 8 * P)
    sid = torch.tensor([[1] * 3 + [2] * 5, [1] * 6 + [0] * 2])
    ref, got = pretrain_loss(model, target, sid), pretrain_loss(other, target, sid)
    torch.testing.assert_close(got.loss, ref.loss, atol=1e-5, rtol=1e-5)
    assert torch.equal(got.expert_counts, ref.expert_counts)
    ref.loss.backward()
    got.loss.backward()
    grads = dict(other.named_parameters())
    for name, p in model.named_parameters():
        assert p.grad is not None and grads[name].grad is not None, name
        torch.testing.assert_close(grads[name].grad, p.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_padding_patches_stay_out_of_moe_losses_and_counts(model):
    target = torch.randn(1, 8 * P)
    padded = pretrain_loss(model, target, torch.tensor([[1] * 5 + [0] * 3]))
    alone = pretrain_loss(model, target[:, : 5 * P], torch.ones(1, 5, dtype=torch.long))
    assert padded.expert_counts.sum(dim=1).tolist() == [5 * 2] * 2  # 5 real tokens × top-2, per layer
    assert torch.equal(padded.expert_counts, alone.expert_counts)
    torch.testing.assert_close(padded.aux_loss, alone.aux_loss)
    torch.testing.assert_close(padded.z_loss, alone.z_loss)


def test_missing_values_modes():
    from moe_ts.packing import standardise

    values = torch.tensor([[[2.0, 0.0, 4.0]]])  # the 0 is a missing value (patchify zeroes them)
    observed = torch.tensor([[[True, False, True]]])
    loc, scale = torch.tensor([[[3.0]]]), torch.tensor([[[2.0]]])
    assert standardise(values, observed, loc, scale, "zero_normalized").tolist() == [[[-0.5, 0.0, 0.5]]]
    assert standardise(values, observed, loc, scale, "zero_raw").tolist() == [[[-0.5, -1.5, 0.5]]]  # uni2ts
    with pytest.raises(ValueError, match="unknown missing_values mode"):
        standardise(values, observed, loc, scale, "drop")

    torch.manual_seed(0)
    a = MoiraiMoEModel(layer_test_config()).eval()
    b = MoiraiMoEModel(dataclasses.replace(layer_test_config(), missing_values="zero_raw")).eval()
    b.load_state_dict(a.state_dict())
    full = [np.sin(np.arange(48) / 3.0) + 3]
    gappy = [full[0].copy()]
    gappy[0][[5, 6, 30]] = np.nan
    same = a.forecast(full, 8, num_samples=3, seed=0).samples, b.forecast(full, 8, num_samples=3, seed=0).samples
    np.testing.assert_array_equal(*same)
    differ = a.forecast(gappy, 8, num_samples=3, seed=0).samples, b.forecast(gappy, 8, num_samples=3, seed=0).samples
    assert not np.array_equal(*differ)
