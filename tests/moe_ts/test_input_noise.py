"""`train.input_noise`: Gaussian noise on the network's normalised inputs, never on the scored targets."""
from __future__ import annotations

import pytest
import torch

from moe_ts.config import ModelConfig, MoEConfig
from moe_ts.model import MoiraiMoEModel
from moe_ts.objectives import pretrain_loss

P, N = 8, 12


@pytest.fixture(scope="module")
def model() -> MoiraiMoEModel:
    torch.manual_seed(0)
    cfg = ModelConfig(patch_size=P, max_seq_len=N, d_model=32, num_layers=1, num_heads=4,
                      moe=MoEConfig(num_experts=2, top_k=1, d_ff=16))
    return MoiraiMoEModel(cfg).double().eval()


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    target = torch.randn(4, N * P, generator=g, dtype=torch.float64) * 5 + 2
    target[:, 20:30] = float("nan")
    return target, torch.ones(4, N, dtype=torch.long)


def test_noise_goes_to_observed_inputs_with_the_requested_std(model):
    seen = []

    def spy(x, *args, **kwargs):
        seen.append(x.detach().clone())
        return model(x, *args, **kwargs)

    target, sid = batch()
    pretrain_loss(model, target, sid, forward=spy)
    torch.manual_seed(3)
    pretrain_loss(model, target, sid, forward=spy, input_noise=0.5)
    clean, noisy = seen
    diff = (noisy - clean).flatten()
    observed = ~torch.isnan(target).flatten()
    assert torch.all(diff[~observed] == 0)  # missing values stay what the model sees for "missing"
    assert diff[observed].std().item() == pytest.approx(0.5, rel=0.1)


def test_targets_are_not_noised(model, input_blind):
    """With a network that ignores its input, the NLL cannot depend on the input noise."""
    target, sid = batch()
    blind = input_blind(model)

    clean = pretrain_loss(model, target, sid, forward=blind).nll
    noisy = pretrain_loss(model, target, sid, forward=blind, input_noise=2.0).nll
    assert torch.equal(clean, noisy)
    # and with the real network the noise does change the loss
    assert not torch.equal(pretrain_loss(model, target, sid).nll,
                           pretrain_loss(model, target, sid, input_noise=2.0).nll)
