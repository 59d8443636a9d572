"""Any-variate pretraining loss (issue 27): a packed row holding a two-variate sample scored against a reference whose
statistics, time ids, mask and variate bias are all built by hand in this file."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from moe_ts.attention import Attention
from moe_ts.config import ModelConfig, MoEConfig
from moe_ts.network import MoiraiMoENetwork
from moe_ts.objectives import pretrain_loss

P, N = 4, 12
# Sample 1: two variates of 4 patches, variate-major (patches 0-3, 4-7); sample 2: one series of 3 patches; padding.
SAMPLE_ID = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 0]])
VARIATE_ID = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0]])
# (first patch, patches) of each series the loss scores on its own: variate 0, variate 1, sample 2
SERIES = [(0, 4), (4, 4), (8, 3)]
TIME = [0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 0]


@pytest.fixture(scope="module")
def model() -> MoiraiMoENetwork:
    torch.manual_seed(0)
    cfg = ModelConfig(patch_size=P, max_seq_len=N, d_model=32, num_layers=2, num_heads=4, stats_ratio=0.3,
                      variate_bias=True, moe=MoEConfig(num_experts=2, top_k=1, d_ff=16))
    net = MoiraiMoENetwork(cfg).double().eval()
    with torch.no_grad():  # a bias large enough to matter, different for same/other variate and per head
        for layer in net.layers:
            layer.attn.var_bias.weight.copy_(torch.randn(2, 4, dtype=torch.float64) * 2)
    return net


def row() -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    target = torch.randn(1, N * P, generator=g, dtype=torch.float64) * 3
    target[0, 4 * P:8 * P] = target[0, 4 * P:8 * P] * 10 + 50  # variate 1 on another scale than variate 0
    target[0, [2, 21, 30, 37]] = float("nan")  # missing values in both variates and in sample 2
    target[0, 11 * P:] = float("nan")  # padding
    return target


def hand_reference(model: MoiraiMoENetwork, target: torch.Tensor, monkeypatch) -> list[tuple[float, float]]:
    """(NLL sum, scored values) of each series in SERIES, everything built here: per-series statistics of the leading
    ceil(0.3·n) patches, standardisation, a mask by time id and sample, and the additive variate bias."""
    cfg = model.config
    x = target[0].numpy().reshape(N, P)
    normed = np.zeros((N, P))
    stats_patches = []
    for first, n in SERIES:
        k = math.ceil(cfg.stats_ratio * n)
        lead = x[first:first + k][~np.isnan(x[first:first + k])]
        mean, var = lead.mean(), lead.var(ddof=1)
        block = (x[first:first + n] - mean) / math.sqrt(var + cfg.min_scale)
        normed[first:first + n] = np.where(np.isnan(block), 0.0, block)
        stats_patches.append(k)
    sid, var_id = SAMPLE_ID[0].tolist(), VARIATE_ID[0].tolist()
    allowed = torch.zeros(1, N, N, dtype=torch.bool)
    for i in range(N):
        for j in range(N):
            allowed[0, i, j] = (sid[i] == sid[j] > 0 and TIME[j] <= TIME[i]) or i == j

    def hand_mask(self, mask_bnl, variate_bn, *rest):  # replaces Attention._mask (SDPA's mask) for this pass only
        dtype = rest[-1]
        w = self.var_bias.weight.to(dtype)
        bias = torch.full((1, self.num_heads, N, N), float("-inf"), dtype=dtype)
        for i in range(N):
            for j in range(N):
                if allowed[0, i, j]:
                    bias[0, :, i, j] = w[1] if var_id[i] == var_id[j] else w[0]
        return bias

    monkeypatch.setattr(Attention, "_mask", hand_mask)
    with torch.no_grad():
        hidden, _, _ = model(torch.from_numpy(normed)[None], torch.tensor([TIME]), allowed,
                             token_mask_bn=SAMPLE_ID > 0)
    monkeypatch.undo()
    out = []
    with torch.no_grad():
        for (first, n), k in zip(SERIES, stats_patches):
            total, count = 0.0, 0.0
            for j in range(first + k - 1, first + n - 1):  # position j predicts patch j+1, a non-statistics patch
                obs = torch.from_numpy(~np.isnan(x[j + 1]))
                lp = model.head.distribution(hidden[:, j:j + 1]).log_prob(torch.from_numpy(normed[j + 1])[None, None])
                total += float(-(lp[0, 0] * obs).sum())
                count += float(obs.sum())
            out.append((total, count))
    return out


def test_a_groups_loss_is_the_sum_of_its_variates_losses_with_hand_built_masks_and_bias(model, monkeypatch):
    target = row()
    with torch.no_grad():
        got = pretrain_loss(model, target, SAMPLE_ID, variate_id=VARIATE_ID)
    ref = hand_reference(model, target, monkeypatch)
    assert all(c > 0 for _, c in ref)  # every series, both variates included, is scored
    expected = sum(t for t, _ in ref) / sum(c for _, c in ref)
    assert float(got.nll) == pytest.approx(expected, rel=1e-10, abs=1e-10)


def test_variate_ids_change_the_loss_only_through_the_bias_and_the_layout(model):
    target = row()
    with torch.no_grad():
        grouped = pretrain_loss(model, target, SAMPLE_ID, variate_id=VARIATE_ID).nll
        # without variate ids the eight patches of sample 1 are one series: another loss
        flat = pretrain_loss(model, target, SAMPLE_ID).nll
    assert not torch.allclose(grouped, flat)


def test_all_zero_variate_ids_give_the_univariate_loss(model):
    """Without the bias bit for bit; with it up to rounding (one number added to a query's every logit)."""
    target = row()
    sid = torch.tensor([[1, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3, 0]])
    torch.manual_seed(0)
    plain = MoiraiMoENetwork(ModelConfig(**{**model.config.__dict__, "variate_bias": False})).double().eval()
    with torch.no_grad():
        uni = pretrain_loss(plain, target, sid)
        zero = pretrain_loss(plain, target, sid, variate_id=torch.zeros_like(sid))
        assert torch.equal(uni.loss, zero.loss) and torch.equal(uni.nll, zero.nll)
        uni = pretrain_loss(model, target, sid)
        zero = pretrain_loss(model, target, sid, variate_id=torch.zeros_like(sid))
    assert float(zero.loss) == pytest.approx(float(uni.loss), rel=1e-12)


def test_a_variate_does_not_see_another_variates_later_patches(model):
    """Perturbing variate 1 at time 2 leaves every token of time < 2 unchanged, and changes variate 0 at time 2."""
    target = row()
    seen = []

    def spy(x, *args, **kw):
        out = model(x, *args, **kw)
        seen.append(out[0].detach())
        return out

    bumped = target.clone()
    bumped[0, 6 * P:7 * P] += 40.0  # variate 1, time 2 (a non-statistics patch: the statistics stay the same)
    with torch.no_grad():
        pretrain_loss(model, target, SAMPLE_ID, forward=spy, variate_id=VARIATE_ID)
        pretrain_loss(model, bumped, SAMPLE_ID, forward=spy, variate_id=VARIATE_ID)
    same = (seen[0] - seen[1]).abs().amax(-1)[0] < 1e-12  # [N] token unchanged
    assert same[[0, 1, 4, 5, 8, 9, 10, 11]].all()  # times 0-1 of both variates, sample 2, padding
    assert not same[2] and not same[6]  # variate 0 at time 2 sees variate 1 at time 2


def test_a_variate_id_of_another_shape_is_refused(model):
    with pytest.raises(ValueError, match="variate_id shape"):
        pretrain_loss(model, row(), SAMPLE_ID, variate_id=VARIATE_ID[:, :-1])


def test_the_self_feed_pass_sees_the_variate_ids_too(model, monkeypatch):
    seen = []
    real = Attention._mask

    def spy(self, mask_bnl, variate_bn, *rest):
        seen.append(variate_bn)
        return real(self, mask_bnl, variate_bn, *rest)

    monkeypatch.setattr(Attention, "_mask", spy)
    torch.manual_seed(0)
    with torch.no_grad():
        pretrain_loss(model, row(), SAMPLE_ID, variate_id=VARIATE_ID, self_feed=1.0)
    assert len(seen) == 2 * model.config.num_layers  # the gradient-free pass and the scored one
    assert all(v is not None and torch.equal(v, VARIATE_ID) for v in seen)


def test_interpolation_fills_short_gaps_inside_a_variate_never_across_variates(model):
    """missing_values: interpolate fills a gap shorter than a patch from the same variate's neighbours; a gap at the
    boundary of two variates (variate 0's last value, variate 1's first) stays missing (an input of 0)."""
    cfg = ModelConfig(**{**model.config.__dict__, "missing_values": "interpolate"})
    torch.manual_seed(0)
    net = MoiraiMoENetwork(cfg).double().eval()
    target = row()
    target[0, 2] = 1.0  # observed: variate 0's statistics patches 0-1 (values 0-7) fully observed
    target[0, 9] = float("nan")  # a gap inside variate 0 (patch 2, a non-statistics patch)
    target[0, [15, 16]] = float("nan")  # a gap of two values across the variate boundary (P = 4)
    fed = []

    def spy(x, *args, **kw):
        fed.append(x.detach())
        return net(x, *args, **kw)

    with torch.no_grad():
        pretrain_loss(net, target, SAMPLE_ID, forward=spy, variate_id=VARIATE_ID)
    x = target[0].numpy()
    lead = x[:8]  # variate 0's leading ceil(0.3 · 4) = 2 patches
    mean, scale = lead.mean(), math.sqrt(lead.var(ddof=1) + cfg.min_scale)
    inputs = fed[0][0].reshape(-1)  # [N·P]
    assert float(inputs[9]) == pytest.approx(((x[8] + x[10]) / 2 - mean) / scale, rel=1e-9)
    assert float(inputs[15]) == 0.0 and float(inputs[16]) == 0.0
