"""The long-horizon head beside the next-patch head (`model.horizon_patches` = K > 0).

Its loss is checked against a per-sample, per-position loop written from the definition (position j of a sample
scores patches j+1..j+K of the same sample that are not statistics patches, in informative samples only); a model
without the head against the next-patch objective as it was written before the head existed; decoding with the
head (`head="horizon"`) for the number of patches per step, the head it draws from, and the KV cache against the
recompute path with the same draws.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from moe_ts.config import ModelConfig, MoEConfig
from moe_ts.model import MoiraiMoEModel
from moe_ts.objectives import pretrain_loss
from moe_ts.packing import PackedLayout, masked_stats, patchify, standardise
from moe_ts.typed_config import ConfigError
from tests.moe_ts.nll_reference import loop_nll

P = 8
MOE = dict(num_experts=4, top_k=2, d_ff=24)


def make_model(seed: int = 0, **fields) -> MoiraiMoEModel:
    torch.manual_seed(seed)
    cfg = ModelConfig(patch_size=P, max_seq_len=24, d_model=32, num_layers=2, num_heads=4, moe=MoEConfig(**MOE),
                      **fields)
    return MoiraiMoEModel(cfg).double().eval()


def packed_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two packed rows: three samples with a missing run; a sample whose statistics are constant; padding."""
    rng = np.random.default_rng(0)
    target = torch.from_numpy(rng.normal(size=(2, 24 * P)) * 3 + 1)
    target[0, 50:70] = float("nan")
    target[1, 9 * P:11 * P] = 4.0  # the leading patches of row 1's second sample: not informative
    sample_id = torch.tensor([[1] * 10 + [2] * 9 + [3] * 5,
                              [1] * 9 + [2] * 6 + [0] * 9])
    return target, sample_id




@pytest.mark.parametrize("predict", [1, 2])
def test_horizon_loss_equals_a_per_position_loop(predict):
    model = make_model(predict_patches=predict, horizon_patches=3)
    target, sample_id = packed_batch()
    with torch.no_grad():
        out = pretrain_loss(model, target, sample_id, horizon_weight=0.7)
    assert float(out.horizon_nll) == pytest.approx(loop_nll(model, model.horizon_head, 3, target, sample_id),
                                                   rel=1e-9, abs=1e-9)
    assert float(out.nll) == pytest.approx(loop_nll(model, model.head, predict, target, sample_id), rel=1e-9)
    cfg = model.config.moe
    expected = out.nll + cfg.aux_loss_coef * out.aux_loss + cfg.z_loss_coef * out.z_loss + 0.7 * out.horizon_nll
    assert float(out.loss) == pytest.approx(float(expected), rel=1e-12)


def test_horizon_weight_scales_only_the_horizon_heads_gradient():
    model = make_model(horizon_patches=3).train()
    target, sample_id = packed_batch()
    grads = {}
    for w in (0.0, 2.0):
        model.zero_grad()
        torch.manual_seed(1)
        pretrain_loss(model, target, sample_id, horizon_weight=w).loss.backward()
        grads[w] = {n: p.grad.clone() if p.grad is not None else None for n, p in model.named_parameters()}
    assert all(g is None or not g.any() for n, g in grads[0.0].items() if n.startswith("horizon_head."))
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads[2.0].items() if n.startswith("horizon_head."))
    torch.testing.assert_close(grads[0.0]["head.proj.components.0.loc.weight"],  # the next head: loss unchanged
                               grads[2.0]["head.proj.components.0.loc.weight"])


def old_next_patch_loss(model: MoiraiMoEModel, target: torch.Tensor, sample_id: torch.Tensor) -> torch.Tensor:
    """The next-patch objective as written before the long-horizon head (moe_ts/objectives.py at bb4eb67)."""
    cfg = model.config
    values, observed = patchify(target, cfg.patch_size)
    layout = PackedLayout.from_sample_id(sample_id)
    stats_bn = layout.stats_patches(cfg.stats_ratio)
    loc, scale, informative = masked_stats(values, observed, stats_bn, layout.sample_id, cfg.min_scale)
    normed = standardise(values, observed, loc, scale, cfg.missing_values, layout.sample_id)
    hidden, _, moe_stats = model(normed, layout.position, layout.attention_mask(),
                                 token_mask_bn=layout.sample_id > 0)
    targets, weights = [], []
    n = values.shape[1]
    for k in range(1, cfg.predict_patches + 1):
        same = (layout.sample_id[:, k:] == layout.sample_id[:, :-k]) & (layout.sample_id[:, k:] > 0)
        scored_bn = same & ~stats_bn[:, k:] & informative[:, k:]
        weight_bnp = (observed[:, k:] & scored_bn[..., None]).to(hidden.dtype)
        pad = n - 1 - weight_bnp.shape[1]
        targets.append(torch.nn.functional.pad(normed[:, k:], (0, 0, 0, pad)))
        weights.append(torch.nn.functional.pad(weight_bnp, (0, 0, 0, pad)))
    target_bnq, weight_bnq = torch.cat(targets, dim=-1), torch.cat(weights, dim=-1)
    log_prob = model.head.distribution(hidden[:, :-1]).log_prob(target_bnq)
    nll = -(log_prob * weight_bnq).sum() / weight_bnq.sum().clamp(min=1.0)
    aux = torch.stack([s.aux_loss for s in moe_stats]).mean()
    z = torch.stack([s.z_loss for s in moe_stats]).mean()
    return nll + cfg.moe.aux_loss_coef * aux + cfg.moe.z_loss_coef * z


@pytest.mark.parametrize("predict", [1, 3])
def test_no_horizon_head_keeps_loss_parameters_and_rng_bit_identical(predict):
    plain = make_model(predict_patches=predict)  # built without the field: today's model
    after_plain = torch.rand(3)
    with_head = make_model(predict_patches=predict, horizon_patches=4)
    after_head = torch.rand(3)
    assert plain.config.horizon_patches == 0 and plain.horizon_head is None
    assert not any("horizon" in name for name in plain.state_dict())
    # the long head is built on a forked RNG: the rest of a seeded model, and the RNG stream after it, are the same
    torch.testing.assert_close(after_plain, after_head, rtol=0, atol=0)
    head_state = with_head.state_dict()
    for name, tensor in plain.state_dict().items():
        assert torch.equal(tensor, head_state[name]), name
    target, sample_id = packed_batch()
    with torch.no_grad():
        out = pretrain_loss(plain, target, sample_id)
        assert out.horizon_nll is None
        assert torch.equal(out.loss, old_next_patch_loss(plain, target, sample_id))
        assert torch.equal(pretrain_loss(with_head, target, sample_id).nll, out.nll)


def test_no_horizon_head_forecasts_are_unchanged(tmp_path):
    """A folder whose config.json predates the field loads to the same model and forecasts bit for bit; the next
    head of a model with a long head forecasts exactly as the same weights without it."""
    plain = make_model()
    plain.save_pretrained(tmp_path / "ck")
    config_path = tmp_path / "ck" / "config.json"
    data = json.loads(config_path.read_text())
    assert data.pop("horizon_patches") == 0
    config_path.write_text(json.dumps(data))
    old = MoiraiMoEModel.from_pretrained(tmp_path / "ck").double().eval()
    contexts = [np.sin(np.arange(70) / 3.0), np.cos(np.arange(45) / 2.0) * 5 + 1]
    ref = plain.forecast(contexts, 30, num_samples=6, seed=2)
    np.testing.assert_array_equal(old.forecast(contexts, 30, num_samples=6, seed=2).samples, ref.samples)
    with_head = make_model(horizon_patches=3)
    np.testing.assert_array_equal(with_head.forecast(contexts, 30, num_samples=6, seed=2, head="next").samples,
                                  ref.samples)


@pytest.mark.parametrize("per_step, fed", [(None, [3, 3]), (2, [2, 2, 2])])
def test_horizon_decoding_emits_the_heads_patches_per_step(monkeypatch, per_step, fed):
    model = make_model(horizon_patches=3)
    from moe_ts import forecasting

    steps, calls = [], {"next": 0, "horizon": 0}
    original = forecasting._Decoder.step
    monkeypatch.setattr(forecasting._Decoder, "step",
                        lambda self, patches_bkp: steps.append(patches_bkp.shape[1]) or original(self, patches_bkp))
    for name, module in (("next", model.head), ("horizon", model.horizon_head)):
        real = module.forward
        monkeypatch.setattr(module, "forward", lambda h, real=real, name=name: calls.__setitem__(
            name, calls[name] + 1) or real(h))
    out = model.forecast([np.sin(np.arange(64) / 4.0)], 50, num_samples=4, seed=0, head="horizon",
                         patches_per_step=per_step)  # 50 points = 7 patches
    assert out.samples.shape == (1, 4, 50)
    assert steps == fed
    assert calls == {"next": 0, "horizon": len(fed) + 1}


@pytest.mark.parametrize("decode", ["sample", "median", "mean"])
def test_horizon_decoding_kv_cache_equals_recompute(decode):
    model = make_model(horizon_patches=3)
    contexts = [np.sin(np.arange(70) / 3.0), np.cos(np.arange(45) / 2.0) * 5 + 1]
    contexts[0][[3, 10, 11]] = np.nan
    cached = model.forecast(contexts, 61, num_samples=5, seed=3, decode=decode, head="horizon")
    recomputed = model.forecast(contexts, 61, num_samples=5, seed=3, decode=decode, head="horizon",
                                use_kv_cache=False)
    assert cached.samples.shape == (2, 5, 61)
    np.testing.assert_allclose(cached.samples, recomputed.samples, rtol=1e-9, atol=1e-9)
    nxt = model.forecast(contexts, 61, num_samples=5, seed=3, decode=decode, head="next")
    assert not np.allclose(nxt.samples, cached.samples)  # the two heads are different predictors


def test_horizon_model_round_trips_through_a_folder(tmp_path):
    model = make_model(horizon_patches=2)
    model.save_pretrained(tmp_path / "ck")
    loaded = MoiraiMoEModel.from_pretrained(tmp_path / "ck").double().eval()
    assert loaded.config.horizon_patches == 2
    context = [np.sin(np.arange(64) / 4.0)]
    np.testing.assert_array_equal(loaded.forecast(context, 40, num_samples=3, seed=1, head="horizon").samples,
                                  model.forecast(context, 40, num_samples=3, seed=1, head="horizon").samples)


def test_bad_head_requests_fail_clearly():
    plain, with_head = make_model(), make_model(horizon_patches=3)
    context = [np.sin(np.arange(64) / 4.0)]
    with pytest.raises(ValueError, match="horizon_patches"):
        plain.forecast(context, 16, num_samples=2, head="horizon")
    with pytest.raises(ValueError, match="head must be one of"):
        with_head.forecast(context, 16, num_samples=2, head="long")
    with pytest.raises(ValueError, match="1..3 \\(the model's horizon_patches\\)"):
        with_head.forecast(context, 16, num_samples=2, head="horizon", patches_per_step=4)
    with pytest.raises(ValueError, match="uni2ts"):
        with_head.forecast(context, 16, num_samples=2, head="horizon", decode="uni2ts")
    with pytest.raises(ConfigError, match="horizon_patches must be in 0..max_seq_len-1=23"):
        make_model(horizon_patches=24)
    with pytest.raises(ConfigError, match="horizon_patches must be in 0..max_seq_len-1=23"):
        make_model(horizon_patches=-1)


def test_train_horizon_loss_weight_is_checked():
    from pretrain.config import TrainConfig

    assert TrainConfig().horizon_loss_weight == 1.0
    with pytest.raises(ConfigError, match="train.horizon_loss_weight must be >= 0"):
        TrainConfig(horizon_loss_weight=-0.5)
