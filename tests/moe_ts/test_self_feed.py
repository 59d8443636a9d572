"""`train.self_feed` (scheduled sampling): input patches replaced by the model's own draws, targets kept."""
from __future__ import annotations

import math

import pytest
import torch

from moe_ts.config import ModelConfig, MoEConfig
from moe_ts.model import MoiraiMoEModel
from moe_ts.objectives import pretrain_loss

P, N = 8, 12
# Two packed series (5 and 6 patches) and one padding patch; stats_ratio 0.3 → 2 statistics patches each.
SAMPLE_ID = torch.tensor([1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 0])
STATS = torch.tensor([1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0], dtype=torch.bool)


@pytest.fixture(scope="module")
def model() -> MoiraiMoEModel:
    torch.manual_seed(0)
    cfg = ModelConfig(patch_size=P, max_seq_len=N, d_model=32, num_layers=1, num_heads=4, stats_ratio=0.3,
                      moe=MoEConfig(num_experts=2, top_k=1, d_ff=16))
    return MoiraiMoEModel(cfg).double().eval()


def batch(rows: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    target = torch.randn(rows, N * P, generator=g, dtype=torch.float64) * 5 + 2
    target[:, 20:30] = float("nan")  # inside patches 2-3 of series 1
    target[:, 88:] = float("nan")  # the padding patch
    return target, SAMPLE_ID.repeat(rows, 1)


def spy_inputs(model, target, sid, **kwargs) -> torch.Tensor:
    seen = []

    def spy(x, *args, **kw):
        seen.append(x.detach().clone())
        return model(x, *args, **kw)

    pretrain_loss(model, target, sid, forward=spy, **kwargs)
    return seen[-1]


def test_rate_one_replaces_exactly_the_scorable_observed_patches_with_the_previous_positions_draws(model):
    target, sid = batch()
    clean = spy_inputs(model, target, sid)  # [B, N, P] normalised inputs
    torch.manual_seed(7)
    fed = spy_inputs(model, target, sid, self_feed=1.0)
    observed = ~torch.isnan(target).view(-1, N, P)
    first_of_sample = torch.tensor([1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0], dtype=torch.bool)
    expect_swapped = (~STATS & ~first_of_sample & (SAMPLE_ID > 0))[None, :, None] & observed
    changed = fed != clean
    assert torch.equal(changed, expect_swapped)

    # The draw fed at patch j+1 comes from the prediction made at patch j over the true inputs.
    torch.manual_seed(7)
    from moe_ts.packing import PackedLayout
    layout = PackedLayout.from_sample_id(sid)
    with torch.no_grad():
        hidden = model(clean, layout.position, layout.attention_mask(), token_mask_bn=sid > 0)[0]
        draws = model.head.distribution(hidden[:, :-1]).sample()[..., :P]
    expected = clean.clone()
    expected[:, 1:] = torch.where(expect_swapped[:, 1:], draws, clean[:, 1:])
    torch.testing.assert_close(fed, expected, rtol=0, atol=1e-12)


def test_rate_sets_the_share_of_replaced_patches(model):
    target, sid = batch(rows=64)
    clean = spy_inputs(model, target, sid)
    torch.manual_seed(11)
    fed = spy_inputs(model, target, sid, self_feed=0.3)
    replaceable = (~STATS & (SAMPLE_ID > 0))[1:].clone()
    replaceable[4] = False  # patch 5 opens series 2: nothing predicts it
    swapped_bn = (fed != clean).any(-1)[:, 1:][:, replaceable]
    share = swapped_bn.double().mean().item()
    n = swapped_bn.numel()
    assert abs(share - 0.3) < 4 * math.sqrt(0.3 * 0.7 / n)


def test_targets_stay_the_true_values(model, input_blind):
    """With a network that ignores its input the NLL cannot depend on what was fed."""
    target, sid = batch()
    blind = input_blind(model)

    clean = pretrain_loss(model, target, sid, forward=blind).nll
    fed = pretrain_loss(model, target, sid, forward=blind, self_feed=1.0).nll
    assert torch.equal(clean, fed)
    assert not torch.equal(pretrain_loss(model, target, sid).nll, pretrain_loss(model, target, sid, self_feed=1.0).nll)


def test_config_rejects_a_rate_outside_0_1():
    from pretrain.config import ConfigError, TrainConfig
    with pytest.raises(ConfigError, match="self_feed"):
        TrainConfig(self_feed=1.5)
