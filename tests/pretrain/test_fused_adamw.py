"""train.fused_adamw (default on): DeepSpeed's engine steps torch's fused AdamW kernel, with and without ZeRO,
and its update is AdamW's (against torch's for-loop implementation, an independent code path)."""
from __future__ import annotations

import copy

import pytest
import torch

from moe_ts.config import ModelConfig, MoEConfig
from moe_ts.model import MoiraiMoEModel
from pretrain.config import PretrainConfig, TrainConfig

MODEL = ModelConfig(patch_size=4, max_seq_len=8, d_model=32, num_layers=1, num_heads=2,
                    moe=MoEConfig(num_experts=4, top_k=2, d_ff=32))


def _torch_optimizer(engine) -> torch.optim.Optimizer:
    opt = engine.optimizer
    return getattr(opt, "optimizer", opt)  # ZeRO wraps torch's optimizer


@pytest.mark.parametrize("zero_stage", [0, 1])
def test_the_engine_steps_torchs_fused_adamw_and_it_matches_the_for_loop_update(zero_stage):
    from pretrain.engine import build_engine, setup_distributed, train_step, unwrap

    torch.manual_seed(0)
    model = MoiraiMoEModel(MODEL)
    gen = torch.Generator().manual_seed(1)
    batch = {"target": torch.randn(4, 32, generator=gen).cumsum(1), "sample_id": torch.ones(4, 8, dtype=torch.long)}
    after = {}
    for fused in (True, False):
        run = PretrainConfig(model=MODEL, train=TrainConfig(steps=3, batch_size=4, warmup_steps=0, grad_clip=0.0,
                                                            zero_stage=zero_stage, fused_adamw=fused,
                                                            wandb_mode="disabled"))
        engine = build_engine(run, setup_distributed(), model=copy.deepcopy(model))
        opt = _torch_optimizer(engine)
        assert isinstance(opt, torch.optim.AdamW) and bool(opt.defaults["fused"]) is fused
        for _ in range(3):
            train_step(engine, [batch], torch.device("cpu"))
        after[fused] = unwrap(engine).state_dict()
    for name, value in after[True].items():
        moved = (value - model.state_dict()[name]).abs().max()
        if moved > 0:  # the same three AdamW updates, rounded differently
            assert (value - after[False][name]).abs().max() <= 1e-3 * moved + 1e-7, name
